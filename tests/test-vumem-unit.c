/* VUMEM parts that need no pvd: the emu backend's check of shareable memory, the
 * sanitizing of sentences from the other VM, the pdev cell allocator, and
 * the library's argument checks and errors without a daemon. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "pv/vumem-server.h"
#include "pv/vumem.h"
#include "vumem/vumem-int.h"

/* The emu backend decides what memory of a program may be shared: a memfd
 * sealed against shrinking that holds the size (rounded up to pages), or a
 * dma-buf; nothing else. */
static void test_mem_import(void)
{
        struct hv_mem m;
        int fd = memfd_create("t", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        CU_ASSERT_FATAL(fd >= 0 && ftruncate(fd, 12000) == 0);
        CU_ASSERT_EQUAL(hv_emu.mem_import(NULL, fd, 12000, &m), -EPERM); /* may still shrink */
        CU_ASSERT(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) == 0);
        CU_ASSERT_EQUAL(hv_emu.mem_import(NULL, fd, 20000, &m), -EINVAL); /* beyond its end */
        CU_ASSERT_EQUAL_FATAL(hv_emu.mem_import(NULL, fd, 12000, &m), 0);
        CU_ASSERT_EQUAL(m.offset, 0);
        CU_ASSERT_EQUAL(m.size, 12288);
        CU_ASSERT_EQUAL(m.flags, HV_MEM_FOREIGN);
        CU_ASSERT(m.fd >= 0 && m.fd != fd);
        hv_emu.mem_free(NULL, &m);
        CU_ASSERT_EQUAL(m.fd, -1);
        close(fd);
        fd = memfd_create("t", MFD_CLOEXEC); /* cannot be sealed at all */
        CU_ASSERT(ftruncate(fd, 4096) == 0);
        CU_ASSERT_EQUAL(hv_emu.mem_import(NULL, fd, 4096, &m), -EPERM);
        close(fd);
        int p[2];
        CU_ASSERT_FATAL(pipe2(p, O_CLOEXEC) == 0);
        CU_ASSERT_EQUAL(hv_emu.mem_import(NULL, p[0], 4096, &m), -EINVAL);
        close(p[0]);
        close(p[1]);
        char path[] = "/tmp/vumem-unit-XXXXXX";
        fd = mkstemp(path);
        CU_ASSERT_FATAL(fd >= 0);
        unlink(path);
        CU_ASSERT(ftruncate(fd, 4096) == 0);
        CU_ASSERT_EQUAL(hv_emu.mem_import(NULL, fd, 4096, &m), -EINVAL); /* a file can shrink */
        close(fd);
        CU_ASSERT(hv_emu.mem_import(NULL, -1, 4096, &m) < 0);
}

static void test_text_copy(void)
{
        char buf[16];
        vumem_text_copy(buf, sizeof(buf), "ok\x01\x7f\n\xff" "z", 7);
        CU_ASSERT_STRING_EQUAL(buf, "ok????z");
        char nonul[40];
        memset(nonul, 'a', sizeof(nonul));
        vumem_text_copy(buf, sizeof(buf), nonul, sizeof(nonul));
        CU_ASSERT_EQUAL(strlen(buf), sizeof(buf) - 1);
        vumem_text_copy(buf, sizeof(buf), "", 0);
        CU_ASSERT_STRING_EQUAL(buf, "");
}

/* A vlink with only a pdev region, for the server end's cell allocator. */
static void test_cells(void)
{
        static struct pvd_vlink vl;
        size_t size = 4096;
        void *mem = calloc(1, size);
        vl.region[PV_REGION_VUMEM] = (struct pvd_region){ .base = mem, .size = size, .fd = -1 };
        struct vs_link L = { .vl = &vl };
        L.ncells = vumem_pdev_ncells(size);
        CU_ASSERT_EQUAL(L.ncells, (4096 - 64) / 32);
        L.bitmap = calloc(L.ncells / 8 + 1, 1);
        uint32_t c[200];
        int n = 0;
        while (n < 200 && vs_cells_alloc(&L, VUMEM_BUF_CELLS, &c[n]) == 0)
                n++;
        CU_ASSERT_EQUAL(n, (int)L.ncells / 2);
        CU_ASSERT_EQUAL(L.used_cells, (uint32_t)n * 2);
        struct vumem_pdev_hdr *h = mem;
        CU_ASSERT_EQUAL(h->cells_used, (uint32_t)n * 2);
        /* Runs never overlap. */
        for (int i = 0; i < n; i++)
                for (int j = i + 1; j < n; j++)
                        CU_ASSERT(c[i] + 2 <= c[j] || c[j] + 2 <= c[i]);
        /* Freed cells are zeroed and found again, also by a longer run. */
        memset(vs_cell_ptr(&L, c[10]), 0xab, 64);
        vs_cells_free(&L, c[10], 2);
        vs_cells_free(&L, c[11], 2);
        CU_ASSERT(((uint8_t *)vs_cell_ptr(&L, c[10]))[5] == 0);
        uint32_t x;
        CU_ASSERT_EQUAL(vs_cells_alloc(&L, 4, &x), c[10] + 2 == c[11] ? 0 : -ENOSPC);
        CU_ASSERT_EQUAL(vs_cells_alloc(&L, 2, &x), -ENOSPC);
        /* Frees outside the map are ignored. */
        uint32_t used = L.used_cells;
        vs_cells_free(&L, L.ncells, 2);
        vs_cells_free(&L, UINT32_MAX - 1, 2);
        CU_ASSERT_EQUAL(L.used_cells, used);
        CU_ASSERT_PTR_NULL(vs_cell_ptr(&L, L.ncells));
        free(L.bitmap);
        free(mem);
}

static void test_lib_without_pvd(void)
{
        setenv("PVD_RUNTIME_DIR", "/nonexistent-pvd-dir", 1);
        VumemSession *s = NULL;
        VumemServer *v = NULL;
        CU_ASSERT_EQUAL(vumemSessionCreate("/dev/vumem-clt-vogl0", &s), -ECONNREFUSED);
        CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "no pvd is running"));
        CU_ASSERT_EQUAL(vumemSessionMasterCreate("vumem-clt-vogl0", &s), -ECONNREFUSED);
        CU_ASSERT_EQUAL(vumemSessionCreate("/dev/a/b", &s), -EINVAL);
        CU_ASSERT_EQUAL(vumemSessionCreate(NULL, &s), -EINVAL);
        CU_ASSERT_EQUAL(vumemSessionCreate("vumem-clt-vogl0", NULL), -EINVAL);
        CU_ASSERT_EQUAL(vumemServerCreate("vumem-srv-vogl0", &v), -ECONNREFUSED);
        CU_ASSERT_EQUAL(vumemServerCreate("vumem-srv-vogl0", NULL), -EINVAL);
        CU_ASSERT_PTR_NULL(s);
        CU_ASSERT_PTR_NULL(v);
        CU_ASSERT_EQUAL(vumemSessionDestroy(NULL), -EINVAL);
        CU_ASSERT_EQUAL(vumemBufferFree(NULL), -EINVAL);
        CU_ASSERT_EQUAL(vumemBufferUnmap(NULL), -EINVAL);
        size_t size;
        nku64_f id;
        CU_ASSERT_EQUAL(vumemBufferSizeGet(NULL, &size), -EINVAL);
        CU_ASSERT_EQUAL(vumemBufferIdGet(NULL, &id), -EINVAL);
        CU_ASSERT_EQUAL(vumemBufferAccess(NULL, 1, NULL), -EINVAL);
        CU_ASSERT_EQUAL(vumemReceive(NULL, NULL), -EINVAL);
        CU_ASSERT_EQUAL(vumemRespond(NULL, NULL), -EINVAL);
        CU_ASSERT_EQUAL(vumemServerDestroy(NULL), -EINVAL);
        void *p;
        CU_ASSERT_EQUAL(vumemServerMemAlloc(NULL, 4096, &p), -EINVAL);
        CU_ASSERT_EQUAL(vumemServerFdRegister(NULL, 0, 4096, &p), -EINVAL);
        CU_ASSERT_EQUAL(vumemServerMemFree(NULL, p), -EINVAL);
        unsetenv("PVD_RUNTIME_DIR");
}

int main(void)
{
        if (CU_initialize_registry() != CUE_SUCCESS)
                return 1;
        CU_pSuite s = CU_add_suite("vumem-unit", NULL, NULL);
        CU_add_test(s, "shareable memory check", test_mem_import);
        CU_add_test(s, "sentences from the other VM", test_text_copy);
        CU_add_test(s, "pdev cells", test_cells);
        CU_add_test(s, "library without pvd", test_lib_without_pvd);
        CU_basic_set_mode(CU_BRM_VERBOSE);
        CU_basic_run_tests();
        unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
        CU_cleanup_registry();
        return failed ? 1 : 0;
}
