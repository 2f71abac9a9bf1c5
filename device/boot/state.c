/* The state page, written through to the flash file (and to its RAM copy). */
#include <string.h>

#include "layout.h"
#include "semihosting.h"
#include "state.h"

int state_save(const boot_state *st)
{
    int fd = sh_open(FLASH_FILE, SH_MODE_RWB);
    int ok;

    memcpy((void *)STATE_PAGE, st, sizeof *st);
    if (fd < 0) {
        return -1;
    }
    ok = sh_seek(fd, STATE_PAGE - FLASH_BASE) == 0 &&
         sh_write(fd, st, sizeof *st) == sizeof *st;
    sh_close(fd);
    return ok ? 0 : -1;
}
