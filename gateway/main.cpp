// descprod-gateway: the HTTP gateway (DESIGN §2, §5). Everything lives in gateway_lib.
#include "gateway/app.hpp"

int main(int argc, char** argv) { return descprod::gateway::gateway_main(argc, argv); }
