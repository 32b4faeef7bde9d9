/*
 * unsynced.c: an LD_PRELOAD shim that lets a test throw away every write
 * not yet fsynced, as a machine that loses power throws away its page cache.
 * Built by confab/tests/crash.rs with `cc -shared -fPIC`.
 *
 * For the files under $CRASH_SHIM_DIR, every call that changes a file's
 * contents or size (write, pwrite, pwrite64, writev, pwritev, pwritev64,
 * ftruncate, ftruncate64, fallocate, fallocate64) first appends an undo
 * record to $CRASH_SHIM_JOURNAL: the file, the range, the bytes there before
 * and the size before. fsync, fdatasync (and syncfs, sync) on a file append
 * a sync record once they have returned 0: the file's earlier records are no
 * longer undoable. The journal lives outside the process, so it survives the
 * SIGKILL that plays the crash; the test then undoes, newest first, every
 * record after each file's last sync (crash.rs, `lose_unsynced`).
 *
 * That is the worst case of a power loss for file contents: none of the
 * unsynced writes reached the disk. Not modelled: directory entries
 * (create, rename, unlink are kept as they are), mmap'ed writes, O_SYNC and
 * O_DSYNC files (none of them used by the embedded store), and partial or
 * reordered writes of the synced ones.
 *
 * A mutex makes each record and its write (or sync) one step, so the
 * journal's order is the files' order.
 *
 * The crash's moment: once the file $CRASH_SHIM_TRIGGER exists, the next
 * fsync/fdatasync of a tracked file stops the process (SIGSTOP) before it
 * syncs, so the test's SIGKILL lands in the middle of a commit, with the
 * commit's writes not yet synced.
 *
 * Records: 'U' path offset len oldsize n old[n]  (n = bytes before, in range)
 *          'S' path                                (synced)
 *          'A'                                     (sync(): everything synced)
 * with path as u32 length + bytes and the numbers as u64, native endian.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char dir[PATH_MAX];
static size_t dirlen;
static int journal = -1;
static const char *trigger;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off64_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pwritev64)(int, const struct iovec *, int, off64_t);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off64_t);
static int (*real_fallocate)(int, int, off_t, off_t);
static int (*real_fallocate64)(int, int, off64_t, off64_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_syncfs)(int);
static void (*real_sync)(void);

__attribute__((constructor)) static void init(void) {
    real_write = dlsym(RTLD_NEXT, "write");
    real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_writev = dlsym(RTLD_NEXT, "writev");
    real_pwritev = dlsym(RTLD_NEXT, "pwritev");
    real_pwritev64 = dlsym(RTLD_NEXT, "pwritev64");
    real_ftruncate = dlsym(RTLD_NEXT, "ftruncate");
    real_ftruncate64 = dlsym(RTLD_NEXT, "ftruncate64");
    real_fallocate = dlsym(RTLD_NEXT, "fallocate");
    real_fallocate64 = dlsym(RTLD_NEXT, "fallocate64");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_syncfs = dlsym(RTLD_NEXT, "syncfs");
    real_sync = dlsym(RTLD_NEXT, "sync");
    const char *d = getenv("CRASH_SHIM_DIR"), *j = getenv("CRASH_SHIM_JOURNAL");
    if (!d || !j || !realpath(d, dir)) return;
    dirlen = strlen(dir);
    trigger = getenv("CRASH_SHIM_TRIGGER");
    journal = open(j, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
}

/* The file behind fd when it is under the directory; 0 otherwise. */
static int tracked(int fd, char *path, uint32_t *len) {
    if (journal < 0 || fd == journal) return 0;
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, PATH_MAX - 1);
    if (n <= (ssize_t)dirlen || strncmp(path, dir, dirlen) != 0 || path[dirlen] != '/') return 0;
    path[n] = 0;
    *len = (uint32_t)n;
    return 1;
}

/* A record is built whole and written with one write(2), so a SIGKILL
 * leaves it in the journal whole or not at all (crash.rs also ignores a torn
 * last record: the change it announces had not started). */
static char *rec;
static size_t rec_len, rec_cap;

static void put(const void *p, size_t n) {
    if (rec_len + n > rec_cap) {
        rec_cap = (rec_len + n) * 2;
        rec = realloc(rec, rec_cap);
        if (!rec) abort();
    }
    memcpy(rec + rec_len, p, n);
    rec_len += n;
}

static void flush(void) {
    const char *c = rec;
    size_t n = rec_len;
    while (n > 0) {
        ssize_t w = real_write(journal, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) abort(); /* a journal that lies would make the test lie */
        c += w;
        n -= (size_t)w;
    }
    rec_len = 0;
}

static void put_path(char kind, const char *path, uint32_t len) {
    put(&kind, 1);
    put(&len, sizeof len);
    put(path, len);
}

/* Records the bytes [offset, offset + len) and the size, before a change. */
static void undo(int fd, const char *path, uint32_t plen, uint64_t offset, uint64_t len) {
    struct stat st;
    if (fstat(fd, &st) != 0) abort();
    uint64_t size = (uint64_t)st.st_size;
    uint64_t n = offset < size ? (size - offset < len ? size - offset : len) : 0;
    char *old = malloc(n ? n : 1);
    if (!old) abort();
    uint64_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, old + got, n - got, (off_t)(offset + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (uint64_t)r;
    }
    put_path('U', path, plen);
    put(&offset, 8);
    put(&len, 8);
    put(&size, 8);
    put(&got, 8);
    put(old, got);
    flush();
    free(old);
}

static size_t iov_len(const struct iovec *iov, int cnt) {
    size_t n = 0;
    for (int i = 0; i < cnt; i++) n += iov[i].iov_len;
    return n;
}

/* The offset a write() at the file position would land at. */
static uint64_t position(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_APPEND)) {
        struct stat st;
        return fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    }
    off_t at = lseek(fd, 0, SEEK_CUR);
    return at < 0 ? 0 : (uint64_t)at;
}

#define GUARDED(fd, offset, len, call)                          \
    do {                                                        \
        char path[PATH_MAX];                                    \
        uint32_t plen;                                          \
        if (!tracked(fd, path, &plen)) return call;             \
        pthread_mutex_lock(&mu);                                \
        undo(fd, path, plen, (uint64_t)(offset), (uint64_t)(len)); \
        __typeof__(call) r = call;                              \
        pthread_mutex_unlock(&mu);                              \
        return r;                                               \
    } while (0)

ssize_t write(int fd, const void *buf, size_t n) { GUARDED(fd, position(fd), n, real_write(fd, buf, n)); }
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) { GUARDED(fd, off, n, real_pwrite(fd, buf, n, off)); }
ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off) {
    GUARDED(fd, off, n, real_pwrite64(fd, buf, n, off));
}
ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    GUARDED(fd, position(fd), iov_len(iov, cnt), real_writev(fd, iov, cnt));
}
ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    GUARDED(fd, off, iov_len(iov, cnt), real_pwritev(fd, iov, cnt, off));
}
ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off64_t off) {
    GUARDED(fd, off, iov_len(iov, cnt), real_pwritev64(fd, iov, cnt, off));
}

/* A size change: what lies beyond the smaller of the two sizes is recorded. */
static uint64_t size_of(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
}
static uint64_t tail_len(int fd, uint64_t to) {
    uint64_t size = size_of(fd);
    return size > to ? size - to : 0;
}

int ftruncate(int fd, off_t len) { GUARDED(fd, len, tail_len(fd, (uint64_t)len), real_ftruncate(fd, len)); }
int ftruncate64(int fd, off64_t len) {
    GUARDED(fd, len, tail_len(fd, (uint64_t)len), real_ftruncate64(fd, len));
}
int fallocate(int fd, int mode, off_t off, off_t len) {
    GUARDED(fd, off, len, real_fallocate(fd, mode, off, len));
}
int fallocate64(int fd, int mode, off64_t off, off64_t len) {
    GUARDED(fd, off, len, real_fallocate64(fd, mode, off, len));
}

static int synced(int fd, int (*real)(int)) {
    char path[PATH_MAX];
    uint32_t plen;
    if (!tracked(fd, path, &plen)) return real(fd);
    pthread_mutex_lock(&mu);
    if (trigger && access(trigger, F_OK) == 0) raise(SIGSTOP);
    int r = real(fd);
    if (r == 0) {
        put_path('S', path, plen);
        flush();
    }
    pthread_mutex_unlock(&mu);
    return r;
}

int fsync(int fd) { return synced(fd, real_fsync); }
int fdatasync(int fd) { return synced(fd, real_fdatasync); }

static void everything_synced(void) {
    if (journal < 0) return;
    char kind = 'A';
    put(&kind, 1);
    flush();
}

int syncfs(int fd) {
    pthread_mutex_lock(&mu);
    int r = real_syncfs(fd);
    if (r == 0) everything_synced();
    pthread_mutex_unlock(&mu);
    return r;
}

void sync(void) {
    pthread_mutex_lock(&mu);
    real_sync();
    everything_synced();
    pthread_mutex_unlock(&mu);
}
