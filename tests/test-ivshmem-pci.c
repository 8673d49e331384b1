/* Unit tests of the guest face of the ivshmem device (daemon/hv/ivshmem-pci.c)
 * that need no guest: the header check against hostile headers (every
 * field wrong in turn, then random scribbles that must never pass a header
 * whose spans leave the BAR), and the search through a sysfs tree of our own
 * (files standing in for BAR2), up to where VFIO would begin. The VFIO part
 * runs in a real guest: tests/test-qemu-guest.sh. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "hv/ivshmem-pci.h"

#define MIB (1ull << 20)

static char root[256];  /* the sysfs tree */
static char err[512];

static int count_fds(void)
{
        DIR *d = opendir("/proc/self/fd");
        int n = 0;
        if (!d)
                return -1;
        while (readdir(d))
                n++;
        closedir(d);
        return n;
}

/* A header as pvhv writes it, for a BAR of size bytes. */
static void good_header(struct pv_ivshm_hdr *h, const char *link, uint64_t size)
{
        uint64_t regions[PV_REGION_COUNT] = { 64 * 1024, 256 * 1024, 0, 128 * 1024 };
        memset(h, 0, sizeof(*h));
        CU_ASSERT_EQUAL_FATAL(pv_ivshm_layout(regions, 64 * 1024, h), 0);
        h->magic = PV_IVSHM_MAGIC;
        h->version = PV_IVSHM_VERSION;
        h->vectors = PV_IVSHM_VECTORS;
        snprintf(h->link_name, sizeof(h->link_name), "%s", link);
        snprintf(h->vm[0], sizeof(h->vm[0]), "vm2");
        snprintf(h->vm[1], sizeof(h->vm[1]), "vm3");
        if (size) {
                /* A larger BAR: the heaps take the rest, as in pv_ivshm_layout. */
                uint64_t extra = (size - h->size) / 2;
                h->heap[0].size += extra;
                h->heap[1].offset += extra;
                h->heap[1].size += extra;
                h->size = size;
        }
}

static void mkdirs(const char *path)
{
        char p[512];
        snprintf(p, sizeof(p), "%s", path);
        for (char *s = p + 1; *s; s++)
                if (*s == '/') {
                        *s = '\0';
                        mkdir(p, 0755);
                        *s = '/';
                }
        mkdir(p, 0755);
}

static void put_file(const char *dir, const char *name, const char *text)
{
        char p[512];
        snprintf(p, sizeof(p), "%s/%s", dir, name);
        FILE *f = fopen(p, "w");
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        fputs(text, f);
        fclose(f);
}

/* A PCI device of the fake sysfs: vendor:device, and a resource2 file of
 * bar bytes starting with h (NULL: zeros). */
static void add_device(const char *bdf, const char *vendor, const char *device, const struct pv_ivshm_hdr *h,
                       uint64_t bar)
{
        char dir[512], p[600];
        snprintf(dir, sizeof(dir), "%s/bus/pci/devices/%s", root, bdf);
        mkdirs(dir);
        put_file(dir, "vendor", vendor);
        put_file(dir, "device", device);
        snprintf(p, sizeof(p), "%s/resource2", dir);
        int fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        CU_ASSERT_FATAL(fd >= 0);
        CU_ASSERT_EQUAL(ftruncate(fd, (off_t)bar), 0);
        if (h)
                CU_ASSERT_EQUAL(pwrite(fd, h, sizeof(*h), 0), (ssize_t)sizeof(*h));
        close(fd);
}

static void remove_tree(const char *path)
{
        DIR *d = opendir(path);
        if (d) {
                struct dirent *e;
                while ((e = readdir(d))) {
                        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                                continue;
                        char p[600];
                        snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
                        struct stat st;
                        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
                                remove_tree(p);
                        else
                                unlink(p);
                }
                closedir(d);
        }
        rmdir(path);
}

static int setup(void)
{
        const char *tmp = getenv("TMPDIR");
        snprintf(root, sizeof(root), "%s/ivpci-test.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        return mkdtemp(root) ? 0 : -1;
}

static int teardown(void)
{
        remove_tree(root);
        return 0;
}

/* A fresh, empty sysfs for each test. */
static void reset_tree(void)
{
        remove_tree(root);
        mkdirs(root);
        char p[512];
        snprintf(p, sizeof(p), "%s/bus/pci/devices", root);
        mkdirs(p);
}

static int check(const struct pv_ivshm_hdr *h, uint64_t bar)
{
        err[0] = '\0';
        int rc = ivpci_header_check(h, bar, err, sizeof(err));
        if (rc < 0)
                CU_ASSERT(err[0] != '\0');
        return rc;
}

static void test_header_good(void)
{
        struct pv_ivshm_hdr h;
        good_header(&h, "vm2-vm3-vogl0", 0);
        CU_ASSERT_EQUAL(h.size, MIB);
        CU_ASSERT_EQUAL(check(&h, h.size), 0);
        good_header(&h, "vm2-vm3-vogl0", 8 * MIB);
        CU_ASSERT_EQUAL(check(&h, 8 * MIB), 0);
}

static void test_header_bad(void)
{
        struct pv_ivshm_hdr h;
#define BAD(mutation, text)                                                     \
        do {                                                                    \
                good_header(&h, "vm2-vm3-vogl0", 0);                            \
                mutation;                                                       \
                CU_ASSERT_EQUAL(check(&h, MIB), -EPROTO);                       \
                CU_ASSERT_PTR_NOT_NULL(strstr(err, text));                      \
        } while (0)
        BAD(h.magic = 0, "no pvd header");
        BAD(h.version = 2, "version 2");
        BAD(h.size = 2 * MIB, "the BAR has 1048576");
        BAD(h.vectors = 64, "64 doorbell vectors");
        BAD(memset(h.link_name, 'a', sizeof(h.link_name)), "not NUL-terminated");
        BAD(h.link_name[0] = '\0', "empty");
        BAD(memset(h.vm[1], 'b', sizeof(h.vm[1])), "not NUL-terminated");
        BAD(h.side[0].offset = 0, "side 0");                    /* over the header */
        BAD(h.side[1].size = 0, "side 1");
        BAD(h.region[1].offset += 100, "region 1");             /* not page-aligned */
        BAD(h.region[3].size += MIB, "region 3");               /* past the end */
        BAD((h.heap[1].offset = UINT64_MAX - 4095, h.heap[1].size = 8192), "heap 1"); /* wraps */
        BAD(h.heap[0].offset = MIB, "heap 0");                  /* starts at the end */
        BAD(h.region[0].offset = h.side[1].offset, "overlap");
        BAD((h.heap[1].offset = h.heap[0].offset + 4096), "overlap");
#undef BAD
        /* A header that fits a larger BAR does not fit this one. */
        good_header(&h, "vm2-vm3-vogl0", 8 * MIB);
        CU_ASSERT_EQUAL(check(&h, 4 * MIB), -EPROTO);
        /* A BAR that is not a power of two is refused even if the header agrees. */
        good_header(&h, "vm2-vm3-vogl0", 0);
        h.size = 3 * MIB;
        CU_ASSERT_EQUAL(check(&h, 3 * MIB), -EPROTO);
}

/* Random scribbles over a good header: whatever passes keeps every span
 * inside the BAR, off the header page and off every other span. */
static void test_header_scribbles(void)
{
        unsigned seed = 12345, passed = 0;
        const char *env = getenv("PV_FUZZ_ITERS");
        unsigned iters = env ? (unsigned)strtoul(env, NULL, 10) : 200000;
        for (unsigned i = 0; i < iters; i++) {
                struct pv_ivshm_hdr h;
                good_header(&h, "vm2-vm3-vogl0", 0);
                unsigned char *b = (unsigned char *)&h;
                unsigned n = 1 + rand_r(&seed) % 4;
                for (unsigned k = 0; k < n; k++)
                        b[rand_r(&seed) % sizeof(h)] = (unsigned char)rand_r(&seed);
                if (ivpci_header_check(&h, MIB, err, sizeof(err)) < 0)
                        continue;
                passed++;
                const struct pv_ivshm_span *all[] = { &h.side[0], &h.side[1], &h.region[0], &h.region[1],
                                                      &h.region[2], &h.region[3], &h.heap[0], &h.heap[1] };
                for (unsigned s = 0; s < sizeof(all) / sizeof(all[0]); s++) {
                        if (!all[s]->size)
                                continue;
                        CU_ASSERT(all[s]->offset >= PV_IVSHM_PAGE);
                        CU_ASSERT(all[s]->offset + all[s]->size <= MIB);
                        CU_ASSERT(all[s]->offset + all[s]->size > all[s]->offset);
                        for (unsigned t = 0; t < s; t++)
                                CU_ASSERT(!all[t]->size || all[t]->offset + all[t]->size <= all[s]->offset ||
                                          all[s]->offset + all[s]->size <= all[t]->offset);
                }
                CU_ASSERT(memchr(h.link_name, 0, sizeof(h.link_name)) != NULL);
        }
        /* Scribbles over reserved and unused bytes pass: the loop saw both. */
        CU_ASSERT(passed > 0 && passed < iters);
}

static void test_find(void)
{
        struct pv_ivshm_hdr h, got;
        char bdf[IVPCI_BDF_MAX];
        int before = count_fds();
        reset_tree();
        /* Not an ivshmem device, though its BAR says the right things. */
        good_header(&h, "vm2-vm3-vogl0", 0);
        add_device("0000:00:02.0", "0x8086\n", "0x1110\n", &h, MIB);
        CU_ASSERT_EQUAL(ivpci_find(root, "vm2-vm3-vogl0", bdf, &got, err, sizeof(err)), -ENOENT);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "no ivshmem device at all"));
        /* An ivshmem device of someone else's (no header) and one of another vlink. */
        add_device("0000:00:03.0", "0x1af4\n", "0x1110\n", NULL, MIB);
        good_header(&h, "vm2-vm4-vbpipe0", 0);
        add_device("0000:00:04.0", "0x1af4\n", "0x1110\n", &h, MIB);
        CU_ASSERT_EQUAL(ivpci_find(root, "vm2-vm3-vogl0", bdf, &got, err, sizeof(err)), -ENOENT);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "0000:00:03.0: no pvd header"));
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "0000:00:04.0: vlink vm2-vm4-vbpipe0"));
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "pvhv --qemu-args"));
        /* The vlink's device, found among them. */
        good_header(&h, "vm2-vm3-vogl0", 4 * MIB);
        add_device("0000:00:05.0", "0x1af4\n", "0x1110\n", &h, 4 * MIB);
        CU_ASSERT_EQUAL(ivpci_find(root, "vm2-vm3-vogl0", bdf, &got, err, sizeof(err)), 0);
        CU_ASSERT_STRING_EQUAL(bdf, "0000:00:05.0");
        CU_ASSERT_EQUAL(memcmp(&got, &h, sizeof(h)), 0);
        CU_ASSERT_EQUAL(ivpci_find(root, "vm2-vm4-vbpipe0", bdf, &got, err, sizeof(err)), 0);
        CU_ASSERT_STRING_EQUAL(bdf, "0000:00:04.0");
        /* Two devices naming one vlink: refused, both named. */
        add_device("0000:00:06.0", "0x1af4\n", "0x1110\n", &h, 4 * MIB);
        CU_ASSERT_EQUAL(ivpci_find(root, "vm2-vm3-vogl0", bdf, &got, err, sizeof(err)), -EEXIST);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "0000:00:05.0"));
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "0000:00:06.0"));
        CU_ASSERT_EQUAL(count_fds(), before);
}

static void test_find_hostile(void)
{
        struct pv_ivshm_hdr h, got;
        char bdf[IVPCI_BDF_MAX];
        int before = count_fds();
        reset_tree();
        /* Names the vlink, but its spans leave the BAR: -EPROTO, said. */
        good_header(&h, "vm2-vm3-vogl0", 0);
        h.heap[1].size = 64 * MIB;
        add_device("0000:00:03.0", "0x1af4\n", "0x1110\n", &h, MIB);
        CU_ASSERT_EQUAL(ivpci_find(root, "vm2-vm3-vogl0", bdf, &got, err, sizeof(err)), -EPROTO);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "0000:00:03.0"));
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "heap 1"));
        /* Says 1 MiB on a 2 MiB BAR. */
        reset_tree();
        good_header(&h, "vm2-vm3-vogl0", 0);
        add_device("0000:00:03.0", "0x1af4\n", "0x1110\n", &h, 2 * MIB);
        CU_ASSERT_EQUAL(ivpci_find(root, "vm2-vm3-vogl0", bdf, &got, err, sizeof(err)), -EPROTO);
        /* A BAR smaller than the header page. */
        reset_tree();
        add_device("0000:00:03.0", "0x1af4\n", "0x1110\n", NULL, 16);
        CU_ASSERT_EQUAL(ivpci_find(root, "vm2-vm3-vogl0", bdf, &got, err, sizeof(err)), -ENOENT);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "BAR2 unreadable"));
        /* A link name of 128 bytes without its NUL does not match a prefix. */
        reset_tree();
        good_header(&h, "x", 0);
        memset(h.link_name, 'x', sizeof(h.link_name));
        add_device("0000:00:03.0", "0x1af4\n", "0x1110\n", &h, MIB);
        char longname[200];
        memset(longname, 'x', 150);
        longname[150] = '\0';
        CU_ASSERT_EQUAL(ivpci_find(root, longname, bdf, &got, err, sizeof(err)), -ENOENT);
        longname[128] = '\0';
        CU_ASSERT_EQUAL(ivpci_find(root, longname, bdf, &got, err, sizeof(err)), -ENOENT);
        CU_ASSERT_EQUAL(count_fds(), before);
}

/* ivpci_open past the search: without vfio-pci it stops with a sentence
 * and gives back every fd. */
static void test_open_no_vfio(void)
{
        struct pv_ivshm_hdr h;
        struct ivpci *d = NULL;
        struct ivpci_opts o = { .sysfs = root, .vfio_dir = root };
        int before = count_fds();
        reset_tree();
        good_header(&h, "vm2-vm3-vogl0", 0);
        add_device("0000:00:03.0", "0x1af4\n", "0x1110\n", &h, MIB);
        CU_ASSERT_EQUAL(ivpci_open("vm2-vm3-vogl0", &o, &d, err, sizeof(err)), -ENODEV);
        CU_ASSERT_PTR_NULL(d);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "modprobe vfio-pci"));
        /* A device another driver holds is left alone. */
        char p[512], t[512];
        snprintf(p, sizeof(p), "%s/bus/pci/drivers/uio_pci_generic", root);
        mkdirs(p);
        snprintf(t, sizeof(t), "%s/bus/pci/devices/0000:00:03.0/driver", root);
        CU_ASSERT_EQUAL(symlink(p, t), 0);
        CU_ASSERT_EQUAL(ivpci_open("vm2-vm3-vogl0", &o, &d, err, sizeof(err)), -EBUSY);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "held by driver uio_pci_generic"));
        /* A given device: must be an ivshmem device and name the vlink. */
        o.bdf = "0000:00:03.0";
        CU_ASSERT_EQUAL(ivpci_open("vm2-vm4-vbpipe0", &o, &d, err, sizeof(err)), -ENOENT);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "serves vlink vm2-vm3-vogl0"));
        o.bdf = "../../../etc";
        CU_ASSERT_EQUAL(ivpci_open("vm2-vm3-vogl0", &o, &d, err, sizeof(err)), -ENOENT);
        o.bdf = "0000:00:09.0";
        CU_ASSERT_EQUAL(ivpci_open("vm2-vm3-vogl0", &o, &d, err, sizeof(err)), -ENOENT);
        CU_ASSERT_EQUAL(count_fds(), before);
}

int main(void)
{
        if (CU_initialize_registry() != CUE_SUCCESS)
                return 1;
        CU_pSuite s = CU_add_suite("ivshmem-pci", setup, teardown);
        CU_add_test(s, "a header as pvhv writes it passes", test_header_good);
        CU_add_test(s, "each field wrong in turn is refused with a reason", test_header_bad);
        CU_add_test(s, "scribbled headers never pass with spans outside the BAR", test_header_scribbles);
        CU_add_test(s, "the search finds the vlink's device among others", test_find);
        CU_add_test(s, "the search refuses hostile headers", test_find_hostile);
        CU_add_test(s, "open stops cleanly where VFIO is missing", test_open_no_vfio);
        CU_basic_set_mode(CU_BRM_VERBOSE);
        CU_basic_run_tests();
        unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
        CU_cleanup_registry();
        return fails ? 1 : 0;
}
