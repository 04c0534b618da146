/* danga's backend-neutral event mask, shared by every backend's C helper.
 * The values are Danga::Socket's POLL* numbers; danga/pollers/base.py
 * defines the same names and tests/test_build.py checks that they agree. */
#define DANGA_READ  1
#define DANGA_WRITE 4
#define DANGA_ERR   8
#define DANGA_HUP   16
