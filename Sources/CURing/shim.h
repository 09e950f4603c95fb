#pragma once
// liburing.h defines _GNU_SOURCE; pulling these system headers in first keeps the
// fd_set / __fds_bits declarations in one module and avoids a conflict with Glibc.
#include <sys/types.h>
#include <sys/select.h>
#include <signal.h>
#include <stdio.h>
#include <liburing.h>
