/* VBPIPE when something dies mid-stream, across real pvd processes
 * (test-2clients: vm2 serves, vm4 is the client):
 *   - a program killed with SIGKILL: the other one reads what arrived, then
 *     EOF, and its writes fail with EPIPE; both ends open again;
 *   - the peer VM's pvd killed: the program on the surviving side gets
 *     EOF and EPIPE, never a hang; an open waiting for the dead VM
 *     completes once its pvd is back and a program there opens;
 *   - the local pvd killed under a program: EOF and EPIPE too;
 *   - a program killed while its open waits for the peer: the next open
 *     of that end works;
 *   - the same while its pvd is stopped, so that the peer's open comes
 *     before that pvd's loop hears of the death: the peer's open is never
 *     paired with the dead program, and waits for the next one.
 * Every byte read is checked against the sender's stream
 * (tests/vbpipe-test.c): what arrives before the EOF is never garbage.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "pvt-run.h"
#include "pvtest.h"
#include "vbpipe-test.h"

static struct pvt_platform plat;

static void test_program_killed(void)
{
        pid_t a, b;
        vbt_start_streams(&a, &b);
        pvt_kill(a, SIGKILL);
        CU_ASSERT_EQUAL(pvt_wait(a, VBT_PROMPT_MS), 128 + SIGKILL);
        vbt_check_survivor(b, 1, "vm4's program after vm2's was killed", false);
        vbt_conversation();

        /* The other way round. */
        vbt_start_streams(&a, &b);
        pvt_kill(b, SIGKILL);
        CU_ASSERT_EQUAL(pvt_wait(b, VBT_PROMPT_MS), 128 + SIGKILL);
        vbt_check_survivor(a, 0, "vm2's program after vm4's was killed", false);
        vbt_conversation();
}

/* vm4's pvd killed: vm2's program sees the end of the conversation, vm4's
 * sees its own end close; an open in vm2 waits for vm4 to come back. */
static void test_peer_pvd_killed(void)
{
        pid_t a, b;
        vbt_start_streams(&a, &b);
        CU_ASSERT(pvt_pvd_stop(&plat, "vm4", SIGKILL) >= 0);
        vbt_check_survivor(a, 0, "vm2's program after vm4's pvd was killed", false);
        vbt_check_survivor(b, 1, "vm4's program after its pvd was killed", true);

        pid_t w = vbt_run(2, "vm2", VBT_CONV, false);
        usleep(300 * 1000);
        CU_ASSERT_EQUAL(vbt_pg[2].opened, 0);
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm4", NULL), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm4", NULL, "ON", 10000), 0);
        usleep(200 * 1000);
        CU_ASSERT_EQUAL(vbt_pg[2].opened, 0);   /* still the rendezvous: nobody in vm4 */
        pid_t v = vbt_run(3, "vm4", VBT_CONV, false);
        CU_ASSERT_EQUAL(pvt_wait(w, 20000), 0);
        CU_ASSERT_EQUAL(pvt_wait(v, 20000), 0);
        for (int i = 2; i < 4; i++) {
                CU_ASSERT_EQUAL(vbt_pg[i].got, VBT_CONV_BYTES);
                CU_ASSERT_FALSE(vbt_pg[i].wrong);
        }
        vbt_conversation();
}

/* vm2's pvd (the server) killed under its program: the program's end
 * closes (EOF, EPIPE); vm4's program loses its peer. Both come back. */
static void test_local_pvd_killed(void)
{
        pid_t a, b;
        vbt_start_streams(&a, &b);
        CU_ASSERT(pvt_pvd_stop(&plat, "vm2", SIGKILL) >= 0);
        vbt_check_survivor(a, 0, "vm2's program after its pvd was killed", true);
        vbt_check_survivor(b, 1, "vm4's program after vm2's pvd was killed", false);
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm2", NULL), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm4", NULL, "ON", 10000), 0);
        vbt_conversation();

        /* A program blocked in read, nothing coming, sees it too: what
         * arrived, then EOF. */
        a = vbt_run(0, "vm2", VBT_READ, false);
        b = vbt_run(1, "vm4", VBT_SEND, false);
        CU_ASSERT(VBT_WAIT_FOR(vbt_pg[1].sent == VBT_CONV_BYTES, 10000));
        usleep(200 * 1000);
        CU_ASSERT(pvt_pvd_stop(&plat, "vm2", SIGKILL) >= 0);
        CU_ASSERT_EQUAL(pvt_wait(a, VBT_PROMPT_MS), 0);
        CU_ASSERT_EQUAL(vbt_pg[0].got, VBT_CONV_BYTES);
        CU_ASSERT_EQUAL(vbt_pg[0].rerr, 0);
        CU_ASSERT_EQUAL(vbt_pg[0].rerr2, 0);
        CU_ASSERT_EQUAL(vbt_pg[0].werr2, EPIPE);
        pvt_kill(b, SIGKILL);
        pvt_wait(b, VBT_PROMPT_MS);
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm2", NULL), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm4", NULL, "ON", 10000), 0);
        vbt_conversation();
}

/* Programs that open and die before the peer comes: the next opens work. */
static void test_opener_killed(void)
{
        pid_t a = vbt_run(0, "vm2", VBT_HOLD, false);
        usleep(200 * 1000);
        CU_ASSERT_EQUAL(vbt_pg[0].opened, 0);   /* blocked: no peer */
        pvt_kill(a, SIGKILL);
        CU_ASSERT_EQUAL(pvt_wait(a, VBT_PROMPT_MS), 128 + SIGKILL);
        vbt_conversation();

        pid_t b = vbt_run(1, "vm4", VBT_HOLD, true);
        CU_ASSERT(VBT_WAIT_FOR(vbt_pg[1].opened, 5000));   /* non-blocking: at once */
        pvt_kill(b, SIGKILL);
        CU_ASSERT_EQUAL(pvt_wait(b, VBT_PROMPT_MS), 128 + SIGKILL);
        vbt_conversation();

        /* Dying on both sides, one after the other, before any pairing. */
        a = vbt_run(0, "vm2", VBT_HOLD, true);
        CU_ASSERT(VBT_WAIT_FOR(vbt_pg[0].opened, 5000));
        pvt_kill(a, SIGKILL);
        pvt_wait(a, VBT_PROMPT_MS);
        b = vbt_run(1, "vm4", VBT_HOLD, false);
        usleep(100 * 1000);
        pvt_kill(b, SIGKILL);
        pvt_wait(b, VBT_PROMPT_MS);
        vbt_conversation();
}

/* A program in dead_vm dies in its blocking open while its pvd is stopped
 * (SIGSTOP): the kernel knows, the pvd's loop not yet. A program in the
 * other VM opens, then the pvd goes on: that open must wait for a live
 * program, not return paired with the dead one (and hit EOF at once). */
static void opener_killed_unseen(const char *dead_vm)
{
        bool dead_is_vm4 = !strcmp(dead_vm, "vm4");
        const char *live_vm = dead_is_vm4 ? "vm2" : "vm4";
        int live = dead_is_vm4 ? 2 : 3, next = dead_is_vm4 ? 3 : 2;
        pid_t d = vbt_run(dead_is_vm4, dead_vm, VBT_HOLD, false);
        usleep(200 * 1000);   /* its open reached pvd, which announced it */
        CU_ASSERT_EQUAL(vbt_pg[dead_is_vm4].opened, 0);
        pid_t pvd = pvt_vm(&plat, dead_vm)->pid;
        CU_ASSERT_EQUAL_FATAL(kill(pvd, SIGSTOP), 0);
        pvt_kill(d, SIGKILL);
        CU_ASSERT_EQUAL(pvt_wait(d, VBT_PROMPT_MS), 128 + SIGKILL);
        pid_t l = vbt_run(live, live_vm, VBT_CONV, false);
        usleep(150 * 1000);   /* its open went to the stopped pvd's side */
        CU_ASSERT_EQUAL(kill(pvd, SIGCONT), 0);
        usleep(300 * 1000);
        if (vbt_pg[live].opened)
                printf("\n    %s's open returned, paired with the dead program in %s ", live_vm, dead_vm);
        CU_ASSERT_EQUAL(vbt_pg[live].opened, 0);
        pid_t n = vbt_run(next, dead_vm, VBT_CONV, false);
        vbt_conversation_end(dead_is_vm4 ? l : n, dead_is_vm4 ? n : l);
}

static void test_opener_killed_unseen(void)
{
        opener_killed_unseen("vm4");   /* the client's program: the server's PAIR is refused */
        opener_killed_unseen("vm2");   /* the server's: no PAIR goes */
        vbt_conversation();
}

static int suite_init(void)
{
        vbt_direct = false;
        return vbt_suite_init(&plat);
}

static int suite_init_direct(void)
{
        vbt_direct = true;
        return vbt_suite_init(&plat);
}

static int suite_fini(void)
{
        return vbt_suite_fini("test-vbpipe-kill");
}

static const struct pvt_test tests[] = {
        { "a program killed mid-stream: EOF and EPIPE for the other, then a new conversation", test_program_killed },
        { "the peer's pvd killed mid-stream: EOF and EPIPE; an open waits for its return", test_peer_pvd_killed },
        { "the local pvd killed under its program: EOF and EPIPE", test_local_pvd_killed },
        { "a program killed before the peer opened: the next open works", test_opener_killed },
        { "a program killed in its open before its pvd heard: the peer's open waits for the next", test_opener_killed_unseen },
        { NULL, NULL },
};

/* Each test twice: programs using read and write, then direct access
 * (-s direct or -s "read and write" picks one). */
static const struct pvt_suite suites[] = {
        { "vbpipe-kill (read and write)", suite_init, suite_fini, tests, 0 },
        { "vbpipe-kill (direct access)", suite_init_direct, suite_fini, tests, 0 },
        { NULL, NULL, NULL, NULL, 0 },
};

int main(int argc, char **argv)
{
        return pvt_main(argc, argv, suites);
}
