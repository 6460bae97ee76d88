#!/usr/bin/env python3
"""A real SMTP server for the notifier's tests (Debian's python3-aiosmtpd).

Usage: smtp_sink.py PORT DIR

Listens on 127.0.0.1:PORT. Each message received is written to DIR/NNNN.eml exactly as the client
sent it (after SMTP's dot-unstuffing, CRLF line endings), with its envelope (MAIL FROM, then each
RCPT TO, one a line) in DIR/NNNN.env; the .eml file appears last, by rename. DIR/ready appears once
the port is bound. Stopped by SIGTERM (by PID).
"""
import asyncio
import os
import signal
import sys

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, folder):
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.folder, "%04d" % self.count)
        with open(base + ".env", "w") as f:
            f.write(envelope.mail_from + "\n" + "\n".join(envelope.rcpt_tos) + "\n")
        with open(base + ".tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(base + ".tmp", base + ".eml")
        return "250 Message accepted"


async def main():
    port = int(sys.argv[1])
    folder = sys.argv[2]
    sink = Sink(folder)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(sink, decode_data=False, hostname="sink.test"), "127.0.0.1", port)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    open(os.path.join(folder, "ready"), "w").close()
    await stop
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
