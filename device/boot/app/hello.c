/*
 * The smallest application for the bootloader: print the version it was built with and,
 * built with APP_CONFIRM=1, confirm itself when it runs on trial (clear the state page's
 * `trial`). Built without, it never confirms: the next boot reverts it.
 */
#include "../layout.h"
#include "../semihosting.h"
#include "../state.h"

#ifndef APP_VERSION
#error "build with -DAPP_VERSION='\"x.y.z\"'"
#endif

int main(void)
{
    boot_state st = *(const boot_state *)STATE_PAGE; /* the bootloader left it in RAM */

    sh_write0("app " APP_VERSION "\n");
#if APP_CONFIRM
    if (st.magic == STATE_MAGIC && st.trial != 0u) {
        st.trial = 0u;
        if (state_save(&st) != 0) {
            sh_write0("app: cannot confirm\n");
            return 1;
        }
        sh_write0("app: confirmed\n");
    }
#else
    (void)st;
#endif
    return 0;
}
