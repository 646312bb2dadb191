/*
 * An independent memsink (protocol version 10) peer for peregrine's tests, written from
 * the protocol description: the header is declared as a plain C struct, so the compiler
 * of this machine decides offsets and the long double format.
 *
 *   memsink read  NAME COUNT OUT [--key]
 *       take COUNT frames; append each payload to OUT as <u32 length><bytes>; print one
 *       line of meta per frame. Exit 2 on a version mismatch.
 *   memsink write NAME FRAMES [--fps N] [--version V] [--count N] [--rm]
 *                    [--size W H]
 *       put frames from FRAMES (records <u8 key><u32 length><bytes>) in a loop,
 *       jumping to the next key frame when a reader asks for one.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SINK_MAGIC 0xCAFEBABECAFEBABEULL
#define SINK_VERSION 10u
#define FOURCC_H264 0x34363248u

struct wants {
	unsigned width;
	unsigned height;
	unsigned format;
	unsigned fps;
	bool key;
};

struct header {
	uint64_t magic;
	uint32_t version;
	uint64_t id;
	size_t used;
	long double last_client_ts;
	struct wants wants;
	unsigned width;
	unsigned height;
	unsigned format;
	unsigned stride;
	bool online;
	bool key;
	unsigned gop;
	long double grab_begin_ts;
	long double grab_end_ts;
	long double encode_begin_ts;
	long double encode_end_ts;
};

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static long double now_s(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	long msec = lround(ts.tv_nsec / 1000000.0);
	if (msec == 1000) { ts.tv_sec += 1; msec = 0; }
	return (long double)ts.tv_sec + (long double)msec / 1000;
}

static size_t data_size(const char *name) {
	const char *s = strrchr(name, ':');
	if (!s) s = strrchr(name, '.');
	if (!s) return 0;
	s++;
	if (!strcasecmp(s, "h264")) return 2097152;
	if (!strcasecmp(s, "jpeg")) return 4194304;
	if (!strcasecmp(s, "raw")) return 3840 * 2160 * 3;
	return 0;
}

static bool lock_within(int fd, double seconds) {
	long double deadline = now_s() + seconds;
	for (;;) {
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) return true;
		if (errno != EWOULDBLOCK) { perror("flock"); exit(1); }
		if (now_s() > deadline) return false;
		usleep(1000);
	}
}

static int do_read(const char *name, long count, const char *out_path, bool key) {
	size_t dsize = data_size(name);
	if (!dsize) { fprintf(stderr, "bad suffix\n"); return 1; }
	int fd = -1;
	while ((fd = shm_open(name, O_RDWR, 0)) < 0) {
		if (errno != ENOENT) { perror("shm_open"); return 1; }
		usleep(10000);
	}
	struct stat st;
	while (fstat(fd, &st) == 0 && (size_t)st.st_size < sizeof(struct header) + dsize) usleep(10000);
	struct header *h = mmap(NULL, sizeof(*h) + dsize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (h == MAP_FAILED) { perror("mmap"); return 1; }
	uint8_t *data = (uint8_t *)h + sizeof(*h);
	FILE *out = fopen(out_path, "wb");
	if (!out) { perror(out_path); return 1; }
	uint8_t *buf = malloc(dsize);
	uint64_t last_id = 0;
	for (long got = 0; got < count && !stop;) {
		if (!lock_within(fd, 1)) continue;
		if (h->magic != SINK_MAGIC) { flock(fd, LOCK_UN); usleep(1000); continue; }
		if (h->version != SINK_VERSION) {
			printf("Protocol version mismatch: sink=%u, required=%u\n", h->version, SINK_VERSION);
			fflush(stdout);
			return 2;
		}
		h->last_client_ts = now_s();
		if (h->id == last_id) {
			struct wants w = {0};
			w.key = (key && got == 0) || h->wants.key;
			h->wants = w;
			flock(fd, LOCK_UN);
			usleep(1000);
			continue;
		}
		last_id = h->id;
		size_t used = h->used;
		if (used > dsize) { fprintf(stderr, "used too big\n"); return 1; }
		memcpy(buf, data, used);
		printf("frame id=%016llx used=%zu width=%u height=%u format=%08x stride=%u online=%d key=%d gop=%u grab_begin=%.3Lf grab_end=%.3Lf encode_begin=%.3Lf encode_end=%.3Lf\n",
			(unsigned long long)h->id, used, h->width, h->height, h->format, h->stride,
			h->online, h->key, h->gop, h->grab_begin_ts, h->grab_end_ts,
			h->encode_begin_ts, h->encode_end_ts);
		struct wants w = {0};
		w.key = (key && got == 0) || h->wants.key;
		h->wants = w;
		flock(fd, LOCK_UN);
		uint32_t len = (uint32_t)used;
		fwrite(&len, 4, 1, out);
		fwrite(buf, 1, used, out);
		got++;
	}
	fclose(out);
	fflush(stdout);
	return 0;
}

struct frame { bool key; uint32_t len; uint8_t *bytes; };

static int do_write(const char *name, const char *frames_path, int fps, unsigned version, long count, bool rm,
		unsigned width, unsigned height) {
	size_t dsize = data_size(name);
	if (!dsize) { fprintf(stderr, "bad suffix\n"); return 1; }
	FILE *in = fopen(frames_path, "rb");
	if (!in) { perror(frames_path); return 1; }
	struct frame *frames = NULL;
	size_t n = 0;
	for (;;) {
		uint8_t key;
		uint32_t len;
		if (fread(&key, 1, 1, in) != 1 || fread(&len, 4, 1, in) != 1) break;
		frames = realloc(frames, (n + 1) * sizeof(*frames));
		frames[n].key = key;
		frames[n].len = len;
		frames[n].bytes = malloc(len);
		if (fread(frames[n].bytes, 1, len, in) != len) { fprintf(stderr, "short frames file\n"); return 1; }
		n++;
	}
	fclose(in);
	if (!n) { fprintf(stderr, "no frames\n"); return 1; }

	mode_t old = umask(0);
	int fd = shm_open(name, O_RDWR | O_CREAT, 0660);
	umask(old);
	if (fd < 0) { perror("shm_open"); return 1; }
	if (ftruncate(fd, sizeof(struct header) + dsize) < 0) { perror("ftruncate"); return 1; }
	struct header *h = mmap(NULL, sizeof(*h) + dsize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (h == MAP_FAILED) { perror("mmap"); return 1; }
	uint8_t *data = (uint8_t *)h + sizeof(*h);
	printf("writing %zu frames, header %zu bytes\n", n, sizeof(struct header));
	fflush(stdout);

	size_t i = 0;
	uint64_t id = 0;
	for (long put = 0; (count < 0 || put < count) && !stop; put++) {
		long double t0 = now_s();
		if (!lock_within(fd, 1)) continue;
		id += 0x9E3779B97F4A7C15ULL;
		h->id = id;
		struct frame *f = &frames[i];
		if (h->wants.key && f->key) h->wants.key = false;
		bool wants_key = h->wants.key;
		memcpy(data, f->bytes, f->len);
		h->used = f->len;
		h->width = width;
		h->height = height;
		h->format = FOURCC_H264;
		h->stride = 0;
		h->online = true;
		h->key = f->key;
		h->gop = 30;
		h->grab_begin_ts = t0;
		h->grab_end_ts = t0;
		h->encode_begin_ts = t0;
		h->encode_end_ts = now_s();
		h->magic = SINK_MAGIC;
		h->version = version;
		flock(fd, LOCK_UN);
		i = (i + 1) % n;
		if (wants_key) {
			while (!frames[i].key) i = (i + 1) % n;
		}
		usleep(1000000 / fps);
	}
	munmap(h, sizeof(*h) + dsize);
	close(fd);
	if (rm) shm_unlink(name);
	return 0;
}

#if defined(__x86_64__) || defined(__aarch64__)
/* `ld VALUE HEX128`: the bytes of VALUE as this machine's long double and as IEEE
 * binary128 (__float128 on x86_64, long double on aarch64), then HEX128 read back as a
 * binary128 number. Lets the tests check both encodings against a real compiler. */
static int do_ld(const char *value, const char *hex128) {
	long double v = strtold(value, NULL);
	unsigned char b[16] = {0};
	memcpy(b, &v, 10);
	for (int i = 0; i < 10; i++) printf("%02x", b[i]);
	printf(" ");
#if defined(__x86_64__)
	__float128 q = (__float128)v;
#else
	long double q = v;
#endif
	memcpy(b, &q, 16);
	for (int i = 0; i < 16; i++) printf("%02x", b[i]);
	for (int i = 0; i < 16 && hex128[2 * i] && hex128[2 * i + 1]; i++) {
		char pair[3] = {hex128[2 * i], hex128[2 * i + 1], 0};
		b[i] = (unsigned char)strtoul(pair, NULL, 16);
	}
	memcpy(&q, b, 16);
	printf(" %.6Lf\n", (long double)q);
	return 0;
}
#endif

int main(int argc, char **argv) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	if (argc >= 5 && !strcmp(argv[1], "read")) {
		bool key = argc >= 6 && !strcmp(argv[5], "--key");
		return do_read(argv[2], atol(argv[3]), argv[4], key);
	}
	if (argc >= 4 && !strcmp(argv[1], "write")) {
		int fps = 30;
		unsigned version = SINK_VERSION;
		long count = -1;
		bool rm = false;
		unsigned width = 0, height = 0;
		for (int a = 4; a < argc; a++) {
			if (!strcmp(argv[a], "--fps") && a + 1 < argc) fps = atoi(argv[++a]);
			else if (!strcmp(argv[a], "--version") && a + 1 < argc) version = (unsigned)atoi(argv[++a]);
			else if (!strcmp(argv[a], "--count") && a + 1 < argc) count = atol(argv[++a]);
			else if (!strcmp(argv[a], "--rm")) rm = true;
			else if (!strcmp(argv[a], "--size") && a + 2 < argc) {
				width = (unsigned)atoi(argv[++a]);
				height = (unsigned)atoi(argv[++a]);
			}
		}
		if (fps < 1) fps = 1;
		return do_write(argv[2], argv[3], fps, version, count, rm, width, height);
	}
#if defined(__x86_64__) || defined(__aarch64__)
	if (argc == 4 && !strcmp(argv[1], "ld")) return do_ld(argv[2], argv[3]);
#endif
	fprintf(stderr, "usage: memsink read NAME COUNT OUT [--key] | write NAME FRAMES [--fps N] [--version V] [--count N] [--rm] [--size W H]\n");
	return 1;
}
