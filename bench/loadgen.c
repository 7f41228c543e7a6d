/*
 * loadgen.c - open-loop HTTP/1.1 load generator for hybridgw's benchmarks.
 *
 * One thread, plain epoll, Linux only. Three modes:
 *
 *   rate   Requests are scheduled at a fixed rate (t0 + i/rate) and sent
 *          over a pool of keep-alive connections. Latency is measured from
 *          the *scheduled* send time, so a stall anywhere (server, network,
 *          this program) shows up in the numbers instead of slowing the
 *          request stream down (no coordinated omission). A request that
 *          finds no idle connection waits in a FIFO; that wait counts.
 *   closed N connections each send back to back until --requests are done
 *          (a fixed amount of work, used for profiling runs).
 *   hold   Opens --conns connections, sends one streaming request on each
 *          and keeps them open; prints "HOLDING open=N ..." on stdout once
 *          every stream has delivered its first event (or the ramp timed
 *          out), then holds until --hold seconds pass or SIGTERM/SIGINT.
 *
 * With --stream, each response is read as server-sent events: the time to
 * the first event (TTFT), the gaps between events and the event count are
 * recorded too. Events are counted by their "\n\n" terminators in the
 * (de-chunked) body.
 *
 * Everything is bounded: --duration, --requests, --hold, --drain.
 * Output: a human-readable summary on stderr and one machine-readable
 * "RESULT key=value ..." line on stdout.
 *
 * Build: cc -O2 -std=c11 -o loadgen loadgen.c -lm
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

/* ---------- small helpers ---------- */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

struct samples {
    uint64_t *v;
    size_t n, cap;
};

static void samples_add(struct samples *s, uint64_t x) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4096;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v) die("out of memory");
    }
    s->v[s->n++] = x;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void samples_sort(struct samples *s) {
    if (s->n) qsort(s->v, s->n, sizeof *s->v, cmp_u64);
}

/* nearest-rank percentile of a sorted sample set, in microseconds */
static double pct_us(const struct samples *s, double p) {
    if (!s->n) return 0;
    size_t k = (size_t)ceil(p / 100.0 * (double)s->n);
    if (k < 1) k = 1;
    if (k > s->n) k = s->n;
    return (double)s->v[k - 1] / 1000.0;
}

static double mean_us(const struct samples *s) {
    if (!s->n) return 0;
    long double sum = 0;
    for (size_t i = 0; i < s->n; i++) sum += s->v[i];
    return (double)(sum / s->n / 1000.0);
}

/* ---------- options ---------- */

enum mode { MODE_RATE, MODE_CLOSED, MODE_HOLD };

static struct {
    enum mode mode;
    const char *host;
    int port;
    const char *path;
    const char *key;
    const char *body;
    double rate;
    double duration;
    double warmup;
    double drain;
    double hold;
    double ramp_timeout;
    long requests;
    int conns;
    int connect_batch;
    bool stream;
    const char *label;
} opt = {
    .mode = MODE_RATE,
    .host = "127.0.0.1",
    .port = 0,
    .path = "/v1/chat/completions",
    .key = NULL,
    .body = NULL,
    .rate = 1000,
    .duration = 10,
    .warmup = 1,
    .drain = 5,
    .hold = 30,
    .ramp_timeout = 60,
    .requests = 10000,
    .conns = 64,
    .connect_batch = 256,
    .stream = false,
    .label = "-",
};

static void usage(void) {
    fputs("usage: loadgen --port P [options]\n"
          "  --mode rate|closed|hold  (default rate)\n"
          "  --host A --port P --path /v1/chat/completions --key K --body JSON\n"
          "  --stream                 read responses as SSE (TTFT, gaps, events)\n"
          "  --rate R --duration S --warmup S --drain S     (rate mode)\n"
          "  --requests N                                   (closed mode)\n"
          "  --conns N                connections (pool size, or streams to hold)\n"
          "  --hold S --ramp-timeout S --connect-batch N    (hold mode)\n"
          "  --label TEXT             echoed in the RESULT line\n",
          stderr);
    exit(2);
}

static void parse_opts(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define ARG() (i + 1 < argc ? argv[++i] : (usage(), ""))
        if (!strcmp(a, "--mode")) {
            const char *m = ARG();
            if (!strcmp(m, "rate")) opt.mode = MODE_RATE;
            else if (!strcmp(m, "closed")) opt.mode = MODE_CLOSED;
            else if (!strcmp(m, "hold")) opt.mode = MODE_HOLD;
            else usage();
        } else if (!strcmp(a, "--host")) opt.host = ARG();
        else if (!strcmp(a, "--port")) opt.port = atoi(ARG());
        else if (!strcmp(a, "--path")) opt.path = ARG();
        else if (!strcmp(a, "--key")) opt.key = ARG();
        else if (!strcmp(a, "--body")) opt.body = ARG();
        else if (!strcmp(a, "--rate")) opt.rate = atof(ARG());
        else if (!strcmp(a, "--duration")) opt.duration = atof(ARG());
        else if (!strcmp(a, "--warmup")) opt.warmup = atof(ARG());
        else if (!strcmp(a, "--drain")) opt.drain = atof(ARG());
        else if (!strcmp(a, "--hold")) opt.hold = atof(ARG());
        else if (!strcmp(a, "--ramp-timeout")) opt.ramp_timeout = atof(ARG());
        else if (!strcmp(a, "--requests")) opt.requests = atol(ARG());
        else if (!strcmp(a, "--conns")) opt.conns = atoi(ARG());
        else if (!strcmp(a, "--connect-batch")) opt.connect_batch = atoi(ARG());
        else if (!strcmp(a, "--stream")) opt.stream = true;
        else if (!strcmp(a, "--label")) opt.label = ARG();
        else usage();
#undef ARG
    }
    if (opt.port <= 0 || opt.port > 65535) usage();
    if (opt.conns < 1 || opt.conns > 1000000) die("--conns out of range");
    if (opt.rate <= 0 || opt.rate > 1e6) die("--rate out of range");
    if (opt.duration <= 0 || opt.duration > 3600) die("--duration out of range");
    if (opt.hold < 0 || opt.hold > 3600) die("--hold out of range");
    if (opt.requests < 1) die("--requests out of range");
    if (opt.connect_batch < 1) opt.connect_batch = 1;
}

/* ---------- connections ---------- */

enum cstate { C_NEW, C_CONNECTING, C_IDLE, C_BUSY, C_DEAD };
enum bstate { B_HEAD, B_LEN, B_CH_SIZE, B_CH_DATA, B_CH_CRLF, B_CH_TRAILER, B_DONE };

struct conn {
    int fd;
    enum cstate state;
    size_t wpos;           /* bytes of the request already written */
    /* current request */
    uint64_t sched_ns;     /* scheduled send time (latency origin) */
    uint64_t first_ev_ns;  /* 0 until the first SSE event */
    uint64_t last_ev_ns;
    unsigned nev;
    bool record;           /* outside warm-up: count it */
    bool counted_open;     /* hold mode */
    /* response parsing */
    enum bstate bs;
    char head[8192];
    size_t hlen;
    int status;
    uint64_t remain;       /* body bytes (B_LEN) or chunk bytes (B_CH_DATA) */
    uint64_t chunk_size;
    bool chunk_size_any;
    bool chunk_ext;
    int trailer_nl;        /* B_CH_TRAILER: consecutive line ends seen */
    bool trailer_cr;
    char prev;             /* last body byte, for "\n\n" detection */
    bool close_after;      /* Connection: close */
};

static int ep;
static struct conn *conns;
static char *req;
static size_t req_len;
static struct sockaddr_in dst;

/* results */
static struct samples lat, ttft, gaps, lag, nevents;
static uint64_t n_sent, n_ok, n_bad_status, n_conn_err, n_recorded_sent;
static int last_bad_status;

/* rate-mode queue of scheduled-but-unsent requests (their sched times) */
static uint64_t *pending;
static size_t pend_head, pend_tail, pend_cap;

static void pend_push(uint64_t t) {
    if (pend_tail - pend_head == pend_cap) {
        size_t ncap = pend_cap ? pend_cap * 2 : 1024;
        uint64_t *n = malloc(ncap * sizeof *n);
        if (!n) die("out of memory");
        for (size_t i = 0; i < pend_cap; i++) n[i] = pending[(pend_head + i) % pend_cap];
        free(pending);
        pending = n;
        pend_tail = pend_tail - pend_head;
        pend_head = 0;
        pend_cap = ncap;
    }
    pending[pend_tail++ % pend_cap] = t;
}
static bool pend_empty(void) { return pend_head == pend_tail; }
static uint64_t pend_pop(void) { return pending[pend_head++ % pend_cap]; }

/* idle connection stack */
static int *idle;
static int n_idle;

static void ep_mod(struct conn *c, uint32_t ev) {
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e) < 0) die("epoll_ctl mod: %s", strerror(errno));
}

static int n_connecting, n_open_streams, n_hold_err, n_hold_finished;

static void conn_start(struct conn *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        n_conn_err++;
        if (opt.mode == MODE_HOLD) n_hold_err++;
        c->state = C_DEAD;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->state = C_CONNECTING;
    c->wpos = 0;
    c->hlen = 0;
    c->bs = B_HEAD;
    int rc = connect(fd, (struct sockaddr *)&dst, sizeof dst);
    if (rc < 0 && errno != EINPROGRESS) {
        close(fd);
        c->fd = -1;
        c->state = C_DEAD;
        n_conn_err++;
        if (opt.mode == MODE_HOLD) n_hold_err++;
        return;
    }
    n_connecting++;
    struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0) die("epoll_ctl add: %s", strerror(errno));
}

static void conn_close(struct conn *c) {
    if (c->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    if (c->state == C_CONNECTING) n_connecting--;
    c->fd = -1;
    c->state = C_DEAD;
}

static void try_write(struct conn *c) {
    while (c->wpos < req_len) {
        ssize_t w = write(c->fd, req + c->wpos, req_len - c->wpos);
        if (w < 0) {
            if (errno == EAGAIN) {
                ep_mod(c, EPOLLIN | EPOLLOUT);
                return;
            }
            return; /* the read side will see the error */
        }
        c->wpos += (size_t)w;
    }
    ep_mod(c, EPOLLIN);
}

static void send_req(struct conn *c, uint64_t sched, bool record) {
    uint64_t t = now_ns();
    c->state = C_BUSY;
    c->sched_ns = sched;
    c->record = record;
    c->first_ev_ns = c->last_ev_ns = 0;
    c->nev = 0;
    c->bs = B_HEAD;
    c->hlen = 0;
    c->status = 0;
    c->prev = 0;
    c->close_after = false;
    c->wpos = 0;
    n_sent++;
    if (record) {
        n_recorded_sent++;
        samples_add(&lag, t > sched ? t - sched : 0);
    }
    try_write(c);
}

/* decoded body bytes: count SSE events */
static void body_bytes(struct conn *c, const char *p, size_t n, uint64_t t) {
    if (!opt.stream) return;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n' && c->prev == '\n') {
            if (!c->first_ev_ns) {
                c->first_ev_ns = t;
                if (opt.mode == MODE_HOLD && !c->counted_open) {
                    c->counted_open = true;
                    n_open_streams++;
                    samples_add(&ttft, t - c->sched_ns);
                }
            } else if (c->record) {
                samples_add(&gaps, t - c->last_ev_ns);
            }
            c->last_ev_ns = t;
            c->nev++;
        }
        c->prev = p[i];
    }
}

static bool parse_head(struct conn *c) {
    /* status line */
    c->head[c->hlen] = 0;
    if (strncmp(c->head, "HTTP/1.", 7) != 0) return false;
    c->status = atoi(c->head + 9);
    bool chunked = false, have_len = false;
    uint64_t len = 0;
    char *line = strstr(c->head, "\r\n");
    while (line && line[2] != '\r') {
        line += 2;
        char *end = strstr(line, "\r\n");
        if (!end) break;
        if (!strncasecmp(line, "content-length:", 15)) {
            have_len = true;
            len = strtoull(line + 15, NULL, 10);
        } else if (!strncasecmp(line, "transfer-encoding:", 18)) {
            if (strcasestr(line, "chunked") && strcasestr(line, "chunked") < end) chunked = true;
        } else if (!strncasecmp(line, "connection:", 11)) {
            if (strcasestr(line, "close") && strcasestr(line, "close") < end) c->close_after = true;
        }
        line = end;
    }
    if (chunked) {
        c->bs = B_CH_SIZE;
        c->chunk_size = 0;
        c->chunk_size_any = false;
        c->chunk_ext = false;
    } else if (have_len) {
        c->bs = len ? B_LEN : B_DONE;
        c->remain = len;
    } else {
        return false; /* close-delimited bodies are not expected here */
    }
    return true;
}

static void finish_req(struct conn *c, uint64_t t);

/* Feed received bytes; returns false on a protocol error. */
static bool feed(struct conn *c, const char *p, size_t n, uint64_t t) {
    while (n > 0 || c->bs == B_DONE) {
        switch (c->bs) {
        case B_HEAD: {
            size_t room = sizeof c->head - 1 - c->hlen;
            size_t take = n < room ? n : room;
            memcpy(c->head + c->hlen, p, take);
            size_t old = c->hlen;
            c->hlen += take;
            c->head[c->hlen] = 0;
            size_t from = old >= 3 ? old - 3 : 0;
            char *e = memmem(c->head + from, c->hlen - from, "\r\n\r\n", 4);
            if (!e) {
                if (c->hlen == sizeof c->head - 1) return false;
                return true;
            }
            size_t hend = (size_t)(e - c->head) + 4;
            size_t used = hend - old;
            c->hlen = hend;
            if (!parse_head(c)) return false;
            p += used;
            n -= used;
            break;
        }
        case B_LEN: {
            size_t take = n < c->remain ? n : (size_t)c->remain;
            body_bytes(c, p, take, t);
            c->remain -= take;
            p += take;
            n -= take;
            if (!c->remain) c->bs = B_DONE;
            break;
        }
        case B_CH_SIZE: {
            char ch = *p++;
            n--;
            if (ch == '\n') {
                if (!c->chunk_size_any) return false;
                if (c->chunk_size == 0) {
                    c->bs = B_CH_TRAILER;
                    c->trailer_nl = 1;
                    c->trailer_cr = false;
                } else {
                    c->bs = B_CH_DATA;
                    c->remain = c->chunk_size;
                }
                c->chunk_size = 0;
                c->chunk_size_any = false;
                c->chunk_ext = false;
            } else if (ch == '\r' || c->chunk_ext) {
                /* skip */
            } else if (ch == ';') {
                c->chunk_ext = true;
            } else {
                int d;
                if (ch >= '0' && ch <= '9') d = ch - '0';
                else if (ch >= 'a' && ch <= 'f') d = ch - 'a' + 10;
                else if (ch >= 'A' && ch <= 'F') d = ch - 'A' + 10;
                else return false;
                c->chunk_size = c->chunk_size * 16 + (uint64_t)d;
                c->chunk_size_any = true;
            }
            break;
        }
        case B_CH_DATA: {
            size_t take = n < c->remain ? n : (size_t)c->remain;
            body_bytes(c, p, take, t);
            c->remain -= take;
            p += take;
            n -= take;
            if (!c->remain) c->bs = B_CH_CRLF;
            break;
        }
        case B_CH_CRLF: {
            char ch = *p++;
            n--;
            if (ch == '\n') c->bs = B_CH_SIZE;
            else if (ch != '\r') return false;
            break;
        }
        case B_CH_TRAILER: {
            /* after "0\r\n": trailer lines, then an empty line */
            char ch = *p++;
            n--;
            if (ch == '\n') {
                if (c->trailer_nl) c->bs = B_DONE;
                c->trailer_nl = 1;
            } else if (ch != '\r') {
                c->trailer_nl = 0;
            }
            break;
        }
        case B_DONE:
            finish_req(c, t);
            if (n > 0) return false; /* pipelining is never used */
            return true;
        }
    }
    return true;
}

static bool running = true;
static uint64_t t_start, t_warm_end, t_sched_end;

static void dispatch_pending(struct conn *c);

static void finish_req(struct conn *c, uint64_t t) {
    bool ok = c->status >= 200 && c->status < 300;
    if (c->record) {
        if (ok) {
            n_ok++;
            samples_add(&lat, t - c->sched_ns);
            if (opt.stream) {
                if (c->first_ev_ns) samples_add(&ttft, c->first_ev_ns - c->sched_ns);
                samples_add(&nevents, c->nev);
            }
        } else {
            n_bad_status++;
            last_bad_status = c->status;
        }
    }
    if (opt.mode == MODE_HOLD) {
        if (c->counted_open) {
            n_open_streams--;
            n_hold_finished++;
        } else {
            n_hold_err++;
        }
        c->bs = B_HEAD;
        conn_close(c);
        return;
    }
    c->bs = B_HEAD;
    c->state = C_IDLE;
    if (c->close_after) {
        conn_close(c);
        conn_start(c);
        return;
    }
    dispatch_pending(c);
}

/* closed mode bookkeeping */
static long closed_issued;

static void dispatch_pending(struct conn *c) {
    if (c->state != C_IDLE) return;
    if (opt.mode == MODE_RATE) {
        if (!pend_empty()) {
            uint64_t s = pend_pop();
            send_req(c, s, s >= t_warm_end);
        } else {
            idle[n_idle++] = (int)(c - conns);
        }
    } else if (opt.mode == MODE_CLOSED) {
        if (running && closed_issued < opt.requests) {
            closed_issued++;
            send_req(c, now_ns(), true);
        }
    } else { /* hold: one request per connection */
        send_req(c, now_ns(), true);
    }
}

static void on_conn_event(struct conn *c, uint32_t ev) {
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            n_conn_err++;
            if (opt.mode == MODE_HOLD) n_hold_err++;
            conn_close(c);
            return;
        }
        if (!(ev & EPOLLOUT)) return;
        n_connecting--;
        c->state = C_IDLE;
        ep_mod(c, EPOLLIN);
        dispatch_pending(c);
        return;
    }
    if (ev & EPOLLOUT) {
        if (c->state == C_BUSY && c->wpos < req_len) try_write(c);
        else ep_mod(c, EPOLLIN);
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        static char buf[65536];
        ssize_t r = read(c->fd, buf, sizeof buf);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        uint64_t t = now_ns();
        if (r <= 0) {
            /* closed or reset */
            bool was_busy = c->state == C_BUSY;
            if (was_busy) {
                n_conn_err++;
                if (opt.mode == MODE_HOLD) {
                    if (c->counted_open) n_open_streams--;
                    n_hold_err++;
                }
            }
            conn_close(c);
            if (opt.mode != MODE_HOLD && running) {
                /* idle keep-alive close by the server: reconnect */
                if (!was_busy) {
                    for (int i = 0; i < n_idle; i++)
                        if (idle[i] == (int)(c - conns)) {
                            idle[i] = idle[--n_idle];
                            break;
                        }
                }
                conn_start(c);
            }
            return;
        }
        if (c->state != C_BUSY) return; /* unexpected bytes on an idle connection */
        if (!feed(c, buf, (size_t)r, t)) {
            n_conn_err++;
            if (opt.mode == MODE_HOLD) {
                if (c->counted_open) n_open_streams--;
                n_hold_err++;
            }
            conn_close(c);
            if (opt.mode != MODE_HOLD && running) conn_start(c);
        }
    }
}

static void arm_timer(int tfd, uint64_t at_ns) {
    struct itimerspec its = {0};
    if (at_ns == 0) at_ns = 1; /* 0 would disarm */
    its.it_value.tv_sec = (time_t)(at_ns / 1000000000ull);
    its.it_value.tv_nsec = (long)(at_ns % 1000000000ull);
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static int count_busy(void) {
    int b = 0;
    for (int i = 0; i < opt.conns; i++)
        if (conns[i].state == C_BUSY) b++;
    return b;
}

int main(int argc, char **argv) {
    parse_opts(argc, argv);
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    signal(SIGPIPE, SIG_IGN);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    const char *body = opt.body;
    if (!body)
        body = opt.stream
                   ? "{\"model\":\"sim-model\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}"
                   : "{\"model\":\"sim-model\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}";
    size_t cap = strlen(body) + 512 + (opt.key ? strlen(opt.key) : 0) + strlen(opt.path);
    req = malloc(cap);
    if (!req) die("out of memory");
    int k = snprintf(req, cap,
                     "POST %s HTTP/1.1\r\nHost: %s:%d\r\n%s%s%sContent-Type: application/json\r\n"
                     "Accept: %s\r\nContent-Length: %zu\r\n\r\n%s",
                     opt.path, opt.host, opt.port, opt.key ? "Authorization: Bearer " : "",
                     opt.key ? opt.key : "", opt.key ? "\r\n" : "",
                     opt.stream ? "text/event-stream" : "application/json", strlen(body), body);
    req_len = (size_t)k;

    memset(&dst, 0, sizeof dst);
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &dst.sin_addr) != 1) die("bad --host (IPv4 address)");

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1: %s", strerror(errno));

    sigset_t ss;
    sigemptyset(&ss);
    sigaddset(&ss, SIGTERM);
    sigaddset(&ss, SIGINT);
    sigprocmask(SIG_BLOCK, &ss, NULL);
    int sfd = signalfd(-1, &ss, SFD_NONBLOCK | SFD_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (sfd < 0 || tfd < 0) die("signalfd/timerfd: %s", strerror(errno));
    static char tag_sig, tag_tim;
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &tag_sig};
    epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &e);
    e.data.ptr = &tag_tim;
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &e);

    conns = calloc((size_t)opt.conns, sizeof *conns);
    idle = calloc((size_t)opt.conns, sizeof *idle);
    if (!conns || !idle) die("out of memory");
    for (int i = 0; i < opt.conns; i++) conns[i].fd = -1;

    /* connect the pool (hold mode ramps in batches, see below) */
    int next_to_connect = 0;
    if (opt.mode != MODE_HOLD) {
        for (; next_to_connect < opt.conns; next_to_connect++) conn_start(&conns[next_to_connect]);
        /* wait up to 5 s for the pool to be connected */
        uint64_t dl = now_ns() + 5000000000ull;
        struct epoll_event evs[256];
        while (n_connecting > 0 && now_ns() < dl) {
            int m = epoll_wait(ep, evs, 256, 100);
            for (int i = 0; i < m; i++) {
                if (evs[i].data.ptr == &tag_sig || evs[i].data.ptr == &tag_tim) continue;
                struct conn *c = evs[i].data.ptr;
                if (c->state == C_CONNECTING) {
                    int err = 0;
                    socklen_t el = sizeof err;
                    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                    if (err) {
                        n_conn_err++;
                        conn_close(c);
                        continue;
                    }
                    n_connecting--;
                    c->state = C_IDLE;
                    ep_mod(c, EPOLLIN);
                    if (opt.mode == MODE_RATE) idle[n_idle++] = (int)(c - conns);
                } else {
                    on_conn_event(c, evs[i].events);
                }
            }
        }
        if (n_connecting > 0 || n_conn_err > 0)
            die("could not connect the pool to %s:%d (%d pending, %" PRIu64 " failed)", opt.host,
                opt.port, n_connecting, n_conn_err);
    }

    t_start = now_ns();
    uint64_t period = (uint64_t)(1e9 / opt.rate);
    uint64_t n_sched_total = 0, next_sched = t_start;
    t_warm_end = t_start + (uint64_t)(opt.warmup * 1e9);
    t_sched_end = t_warm_end + (uint64_t)(opt.duration * 1e9);
    uint64_t hard_end; /* absolute bound for the whole run */
    uint64_t hold_start = 0;
    bool holding = false;
    uint64_t last_progress = t_start;

    if (opt.mode == MODE_RATE) {
        hard_end = t_sched_end + (uint64_t)(opt.drain * 1e9);
        arm_timer(tfd, next_sched);
    } else if (opt.mode == MODE_CLOSED) {
        t_warm_end = t_start;
        hard_end = t_start + (uint64_t)(opt.duration * 1e9);
        for (int i = 0; i < opt.conns; i++) dispatch_pending(&conns[i]);
        arm_timer(tfd, hard_end);
    } else {
        t_warm_end = t_start;
        hard_end = t_start + (uint64_t)((opt.ramp_timeout + opt.hold) * 1e9);
        arm_timer(tfd, t_start + 1000000ull);
    }

    struct epoll_event evs[1024];
    while (running) {
        int m = epoll_wait(ep, evs, 1024, 1000);
        if (m < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < m; i++) {
            if (evs[i].data.ptr == &tag_sig) {
                struct signalfd_siginfo si;
                while (read(sfd, &si, sizeof si) > 0) {}
                running = false;
            } else if (evs[i].data.ptr == &tag_tim) {
                uint64_t exp;
                while (read(tfd, &exp, sizeof exp) > 0) {}
            } else {
                on_conn_event(evs[i].data.ptr, evs[i].events);
            }
        }
        uint64_t t = now_ns();
        if (t >= hard_end) running = false;

        if (opt.mode == MODE_RATE) {
            while (next_sched <= t && next_sched < t_sched_end) {
                bool rec = next_sched >= t_warm_end;
                if (n_idle > 0) {
                    struct conn *c = &conns[idle[--n_idle]];
                    send_req(c, next_sched, rec);
                } else {
                    pend_push(next_sched);
                }
                n_sched_total++;
                next_sched = t_start + n_sched_total * period;
            }
            if (next_sched < t_sched_end) {
                arm_timer(tfd, next_sched);
            } else {
                /* schedule done: stop once nothing is outstanding */
                if (pend_empty() && count_busy() == 0) running = false;
                else arm_timer(tfd, t + 1000000ull);
            }
        } else if (opt.mode == MODE_CLOSED) {
            if (closed_issued >= opt.requests && count_busy() == 0) running = false;
        } else {
            /* hold: ramp connections in batches */
            while (!holding && next_to_connect < opt.conns && n_connecting < opt.connect_batch &&
                   (int)(next_to_connect - n_open_streams - n_hold_err - n_hold_finished) <
                       opt.connect_batch * 4) {
                conn_start(&conns[next_to_connect++]);
            }
            if (!holding) {
                bool all = next_to_connect == opt.conns &&
                           n_open_streams + n_hold_err + n_hold_finished >= opt.conns;
                bool timed_out = t >= t_start + (uint64_t)(opt.ramp_timeout * 1e9);
                if (all || timed_out) {
                    holding = true;
                    hold_start = t;
                    hard_end = t + (uint64_t)(opt.hold * 1e9);
                    printf("HOLDING open=%d err=%d finished=%d target=%d ramp_s=%.2f%s\n",
                           n_open_streams, n_hold_err, n_hold_finished, opt.conns,
                           (t - t_start) / 1e9, timed_out && !all ? " (ramp timed out)" : "");
                    fflush(stdout);
                }
            }
            if (t - last_progress >= 1000000000ull) {
                last_progress = t;
                fprintf(stderr, "loadgen: %s t=%.0fs open=%d connecting=%d err=%d finished=%d\n",
                        holding ? "holding" : "ramping", (t - t_start) / 1e9, n_open_streams,
                        n_connecting, n_hold_err, n_hold_finished);
            }
            arm_timer(tfd, t + 100000000ull);
        }
    }
    uint64_t t_end = now_ns();

    samples_sort(&lat);
    samples_sort(&ttft);
    samples_sort(&gaps);
    samples_sort(&lag);
    samples_sort(&nevents);

    if (opt.mode == MODE_HOLD) {
        fprintf(stderr, "loadgen hold: target=%d open_at_end=%d err=%d finished_early=%d held_s=%.1f\n",
                opt.conns, n_open_streams, n_hold_err, n_hold_finished,
                holding ? (t_end - hold_start) / 1e9 : 0.0);
        printf("RESULT label=%s mode=hold target=%d open_at_end=%d err=%d finished_early=%d "
               "ttft_p50_us=%.0f ttft_p99_us=%.0f\n",
               opt.label, opt.conns, n_open_streams, n_hold_err, n_hold_finished, pct_us(&ttft, 50),
               pct_us(&ttft, 99));
        /* the kernel closes every socket at exit */
        return 0;
    }

    uint64_t unfinished = (uint64_t)count_busy();
    uint64_t unsent = pend_tail - pend_head;
    double meas_s = opt.mode == MODE_RATE ? opt.duration : (t_end - t_start) / 1e9;
    double rps = n_ok / meas_s;
    fprintf(stderr,
            "loadgen %s: %s%s target=%.0f/s sent=%" PRIu64 " ok=%" PRIu64 " (%.1f/s) bad_status=%" PRIu64
            " (last %d) conn_err=%" PRIu64 " unfinished=%" PRIu64 " never_sent=%" PRIu64 "\n"
            "  latency us: p50=%.1f p90=%.1f p99=%.1f p99.9=%.1f max=%.1f mean=%.1f\n"
            "  send lag us (scheduled->written): p50=%.1f p99=%.1f max=%.1f\n",
            opt.label, opt.mode == MODE_RATE ? "open-loop" : "closed-loop",
            opt.stream ? " stream" : "", opt.mode == MODE_RATE ? opt.rate : 0.0, n_recorded_sent, n_ok,
            rps, n_bad_status, last_bad_status,
            n_conn_err, unfinished, unsent, pct_us(&lat, 50), pct_us(&lat, 90), pct_us(&lat, 99),
            pct_us(&lat, 99.9), pct_us(&lat, 100), mean_us(&lat), pct_us(&lag, 50), pct_us(&lag, 99),
            pct_us(&lag, 100));
    if (opt.stream)
        fprintf(stderr,
                "  ttft us: p50=%.1f p90=%.1f p99=%.1f max=%.1f | event gap us: p50=%.1f p99=%.1f "
                "max=%.1f | events/stream: p50=%.0f\n",
                pct_us(&ttft, 50), pct_us(&ttft, 90), pct_us(&ttft, 99), pct_us(&ttft, 100),
                pct_us(&gaps, 50), pct_us(&gaps, 99), pct_us(&gaps, 100),
                nevents.n ? (double)nevents.v[nevents.n / 2] : 0.0);

    printf("RESULT label=%s sent=%" PRIu64 " ok=%" PRIu64 " rps=%.1f bad=%" PRIu64 " conn_err=%" PRIu64
           " unfinished=%" PRIu64 " never_sent=%" PRIu64
           " p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f mean_us=%.1f"
           " lag_p99_us=%.1f",
           opt.label, n_recorded_sent, n_ok, rps, n_bad_status, n_conn_err, unfinished, unsent,
           pct_us(&lat, 50), pct_us(&lat, 90), pct_us(&lat, 99), pct_us(&lat, 99.9), pct_us(&lat, 100),
           mean_us(&lat), pct_us(&lag, 99));
    if (opt.stream)
        printf(" ttft_p50_us=%.1f ttft_p90_us=%.1f ttft_p99_us=%.1f gap_p50_us=%.2f gap_p99_us=%.2f"
               " events=%.0f",
               pct_us(&ttft, 50), pct_us(&ttft, 90), pct_us(&ttft, 99), pct_us(&gaps, 50),
               pct_us(&gaps, 99), nevents.n ? (double)nevents.v[nevents.n / 2] : 0.0);
    printf("\n");
    return (n_ok > 0) ? 0 : 1;
}
