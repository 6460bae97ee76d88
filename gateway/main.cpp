// descprod-gateway: the HTTP gateway (docs/architecture.md#gateway, docs/api.md). Everything lives in gateway_lib.
#include "gateway/app.hpp"

int main(int argc, char** argv) { return descprod::gateway::gateway_main(argc, argv); }
