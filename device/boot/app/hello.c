/* The smallest application for the bootloader: print the version it was built with. */
#include "../semihosting.h"

#ifndef APP_VERSION
#error "build with -DAPP_VERSION='\"x.y.z\"'"
#endif

int main(void)
{
    sh_write0("app " APP_VERSION "\n");
    return 0;
}
