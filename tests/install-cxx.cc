// A C++ program that tests/test-install.sh builds outside the tree against
// the installed libpvclient only (pkg-config pvclient): every public header
// compiles as C++ and links. It moves a line over a vbpipe:
//   install-cxx write NAME TEXT     vbpipeOpen(NAME) and write TEXT
//   install-cxx read NAME COUNT     vbpipeOpen(NAME), read COUNT bytes, print them
#include <pv/pvclient.h>
#include <pv/vbpipe.h>
#include <pv/vrpq.h>
#include <pv/vumem-server.h>
#include <pv/vumem.h>

#include <fcntl.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

int main(int argc, char **argv)
{
        if (argc != 4) {
                std::fprintf(stderr, "usage: install-cxx write|read NAME TEXT|COUNT\n");
                return 2;
        }
        const std::string mode = argv[1];
        const bool writing = mode == "write";
        int fd = vbpipeOpen(argv[2], writing ? O_WRONLY : O_RDONLY);
        if (fd < 0) {
                std::fprintf(stderr, "install-cxx: %s: %s (%s)\n", argv[2], std::strerror(errno), pvLastError());
                return 1;
        }
        int rc = 0;
        if (writing) {
                size_t n = std::strlen(argv[3]);
                if (vbpipeWrite(fd, argv[3], n) != static_cast<ssize_t>(n))
                        rc = 1;
        } else {
                std::vector<char> buf(std::strtoul(argv[3], nullptr, 10));
                ssize_t n = vbpipeRead(fd, buf.data(), buf.size());
                if (n != static_cast<ssize_t>(buf.size()))
                        rc = 1;
                else
                        std::printf("%.*s (libpvclient %s)\n", static_cast<int>(n), buf.data(), pvVersion());
        }
        if (vbpipeClose(fd) < 0)
                rc = 1;
        return rc;
}
