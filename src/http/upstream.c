/*
 * upstream.c - libcurl multi driven by a libuv loop (see upstream.h).
 *
 * curl asks, through CURLMOPT_SOCKETFUNCTION, to watch a socket for reading
 * and/or writing; we keep one uv_poll_t per socket and hand readiness back
 * with curl_multi_socket_action(). CURLMOPT_TIMERFUNCTION sets the single
 * multi timer. Finished transfers are collected with curl_multi_info_read().
 *
 * Each transfer also has its own uv_timer for the deadlines curl does not
 * express: time to the response head, and the longest gap between body
 * pieces (a stalled stream is a failure, not a hang).
 */
#include <stdlib.h>
#include <strings.h>

#include "hybridgw/log.h"
#include "hybridgw/upstream.h"

const char gw_up_err_connect[] = "could not connect to upstream";
const char gw_up_err_connect_timeout[] = "timed out connecting to upstream";
const char gw_up_err_first_byte[] = "upstream sent no response in time";
const char gw_up_err_stalled[] = "upstream stream stalled";
const char gw_up_err_timeout[] = "upstream request timed out";
const char gw_up_err_io[] = "upstream connection failed";
const char gw_up_err_too_big[] = "upstream response too large";
const char gw_up_err_cancelled[] = "upstream request cancelled (shutting down)";

const char *gw_up_err_kind(const char *e)
{
    if (e == gw_up_err_connect)
        return "connect";
    if (e == gw_up_err_connect_timeout || e == gw_up_err_first_byte || e == gw_up_err_timeout)
        return "timeout";
    if (e == gw_up_err_stalled)
        return "stalled";
    if (e == gw_up_err_too_big)
        return "too_big";
    return "io";
}

struct gw_upstream {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    size_t active;
    struct gw_up *list;           /* transfers in progress */
    CURL *idle[64];               /* reset easy handles kept for reuse */
    size_t nidle;
    bool no_proxy;                /* no *_proxy variable was set at start */
    struct sock_ctx **byfd;       /* poll handles by socket number, kept */
    size_t nbyfd;                 /* across transfers (see on_socket) */
};

struct sock_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    struct gw_upstream *us;
};

/* Response headers are kept packed: "name\0value\0" pairs. */
struct gw_up {
    struct gw_upstream *us;
    struct gw_up *prev, *next;    /* us->list */
    CURL *easy;
    struct curl_slist *req_headers;
    const struct gw_up_callbacks *cb;
    void *ud;
    uv_timer_t timer;             /* first-byte / idle deadline */
    char *hdrs;
    size_t hdrs_len, hdrs_cap;
    int status;
    uint64_t first_byte_ns;
    uint64_t first_byte_timeout_ms;
    uint64_t idle_timeout_ms;
    const char *fail;             /* our own failure reason, if any */
    bool head_done;
    bool paused;
    bool done;                    /* on_done ran or cancelled */
    bool stop;                    /* on_data asked to stop */
};

static void check_multi(struct gw_upstream *us);

/* ---- sockets ---- */

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct sock_ctx *sc = p->data;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    int running;
    struct gw_upstream *us = sc->us;
    curl_multi_socket_action(us->multi, sc->fd, flags, &running);
    check_multi(us);
}

static void on_sock_closed(uv_handle_t *h)
{
    free(h->data);
}

/* curl says REMOVE whenever a transfer ends and its connection goes back to
 * the pool, and asks again for the same socket on the next request. A poll
 * handle per socket number is kept (stopped) in between instead of being
 * closed and made anew: that saves an allocation, a close and several
 * syscalls per request. A stopped handle holds no kernel state, so it is
 * safe even when curl closed the socket and the number is reused. */
static struct sock_ctx *sock_for(struct gw_upstream *us, curl_socket_t fd)
{
    if (fd < 0)
        return NULL;
    if ((size_t)fd >= us->nbyfd) {
        size_t n = us->nbyfd ? us->nbyfd : 64;
        while (n <= (size_t)fd)
            n *= 2;
        us->byfd = gw_realloc(us->byfd, n * sizeof(*us->byfd));
        memset(us->byfd + us->nbyfd, 0, (n - us->nbyfd) * sizeof(*us->byfd));
        us->nbyfd = n;
    }
    struct sock_ctx *sc = us->byfd[fd];
    if (sc)
        return sc;
    sc = gw_calloc(1, sizeof(*sc));
    sc->fd = fd;
    sc->us = us;
    if (uv_poll_init_socket(us->loop, &sc->poll, fd) < 0) {
        free(sc);
        return NULL;
    }
    sc->poll.data = sc;
    us->byfd[fd] = sc;
    return sc;
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct gw_upstream *us = userp;
    struct sock_ctx *sc = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (sc)
            uv_poll_stop(&sc->poll);
        return 0;
    }
    if (!sc) {
        sc = sock_for(us, fd);
        if (!sc)
            return -1;
        curl_multi_assign(us->multi, fd, sc);
    }
    int ev = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        ev |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        ev |= UV_WRITABLE;
    uv_poll_start(&sc->poll, ev, on_poll);
    return 0;
}

static void on_multi_timer(uv_timer_t *t)
{
    struct gw_upstream *us = t->data;
    int running;
    curl_multi_socket_action(us->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_multi(us);
}

static int on_timer_change(CURLM *multi, long timeout_ms, void *userp)
{
    struct gw_upstream *us = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&us->timer);
    else
        uv_timer_start(&us->timer, on_multi_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

struct gw_upstream *gw_upstream_new(uv_loop_t *loop)
{
    struct gw_upstream *us = gw_calloc(1, sizeof(*us));
    us->loop = loop;
    us->multi = curl_multi_init();
    if (!us->multi) {
        free(us);
        return NULL;
    }
    uv_timer_init(loop, &us->timer);
    us->timer.data = us;
    static const char *const proxy_vars[] = {"http_proxy", "HTTP_PROXY", "https_proxy",
                                             "HTTPS_PROXY", "all_proxy", "ALL_PROXY"};
    us->no_proxy = true;
    for (size_t i = 0; i < GW_ARRAY_LEN(proxy_vars); i++)
        if (getenv(proxy_vars[i]))
            us->no_proxy = false;
    curl_multi_setopt(us->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(us->multi, CURLMOPT_SOCKETDATA, us);
    curl_multi_setopt(us->multi, CURLMOPT_TIMERFUNCTION, on_timer_change);
    curl_multi_setopt(us->multi, CURLMOPT_TIMERDATA, us);
    curl_multi_setopt(us->multi, CURLMOPT_MAXCONNECTS, 4096L);
    return us;
}

size_t gw_upstream_active(const struct gw_upstream *us)
{
    return us->active;
}

/* ---- transfers ---- */

static void up_timer_closed(uv_handle_t *h)
{
    struct gw_up *u = h->data;
    free(u->hdrs);
    free(u);
}

/* Detach from curl and free (after the timer handle closes). */
static void up_destroy(struct gw_up *u)
{
    struct gw_upstream *us = u->us;
    if (u->easy) {
        curl_multi_remove_handle(us->multi, u->easy);
        if (us->nidle < GW_ARRAY_LEN(us->idle)) {
            /* curl_easy_init costs several allocations: reuse handles */
            curl_easy_reset(u->easy);
            us->idle[us->nidle++] = u->easy;
        } else {
            curl_easy_cleanup(u->easy);
        }
        u->easy = NULL;
        us->active--;
        if (u->prev)
            u->prev->next = u->next;
        else
            us->list = u->next;
        if (u->next)
            u->next->prev = u->prev;
    }
    curl_slist_free_all(u->req_headers);
    u->req_headers = NULL;
    uv_timer_stop(&u->timer);
    uv_close((uv_handle_t *)&u->timer, up_timer_closed);
}

static void finish(struct gw_up *u, const char *err)
{
    if (u->done)
        return;
    u->done = true;
    if (u->cb->on_done)
        u->cb->on_done(u, err, u->ud);
    up_destroy(u);
}

static void on_up_timer(uv_timer_t *t)
{
    struct gw_up *u = t->data;
    if (u->done)
        return;
    if (u->paused) {
        /* we stopped reading ourselves: the client is slow, not the upstream */
        uv_timer_start(&u->timer, on_up_timer, u->idle_timeout_ms ? u->idle_timeout_ms : 1000, 0);
        return;
    }
    u->fail = u->head_done ? gw_up_err_stalled : gw_up_err_first_byte;
    finish(u, u->fail);
}

static void arm_deadline(struct gw_up *u)
{
    uint64_t ms = u->head_done ? u->idle_timeout_ms : u->first_byte_timeout_ms;
    if (ms)
        uv_timer_start(&u->timer, on_up_timer, ms, 0);
    else
        uv_timer_stop(&u->timer);
}

static void head_complete(struct gw_up *u)
{
    if (u->head_done)
        return;
    u->head_done = true;
    arm_deadline(u);
    if (u->cb->on_head)
        u->cb->on_head(u, u->status, u->ud);
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct gw_up *u = ud;
    size_t len = size * n;
    if (!u->first_byte_ns)
        u->first_byte_ns = gw_now_ns();
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        /* a new header block (after 100 Continue, or the first) */
        u->hdrs_len = 0;
        const char *sp = memchr(p, ' ', len);
        u->status = sp ? atoi(sp + 1) : 0;
        return len;
    }
    if (len <= 2 && (p[0] == '\r' || p[0] == '\n')) {
        if (u->status >= 200)
            head_complete(u);
        return len;
    }
    const char *colon = memchr(p, ':', len);
    if (!colon || u->hdrs_len + len + 2 > 16384)
        return len;  /* keep at most 16 KiB of headers; ignore the rest */
    size_t nl = (size_t)(colon - p);
    const char *v = colon + 1;
    const char *end = p + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    size_t vl = (size_t)(end - v);
    if (u->hdrs_len + nl + vl + 2 > u->hdrs_cap) {
        size_t cap = u->hdrs_cap ? u->hdrs_cap * 2 : 512;
        while (cap < u->hdrs_len + nl + vl + 2)
            cap *= 2;
        u->hdrs = gw_realloc(u->hdrs, cap);
        u->hdrs_cap = cap;
    }
    memcpy(u->hdrs + u->hdrs_len, p, nl);
    u->hdrs_len += nl;
    u->hdrs[u->hdrs_len++] = '\0';
    memcpy(u->hdrs + u->hdrs_len, v, vl);
    u->hdrs_len += vl;
    u->hdrs[u->hdrs_len++] = '\0';
    return len;
}

static size_t on_write(char *p, size_t size, size_t n, void *ud)
{
    struct gw_up *u = ud;
    size_t len = size * n;
    if (u->done)
        return 0;
    head_complete(u);
    if (u->idle_timeout_ms)
        uv_timer_start(&u->timer, on_up_timer, u->idle_timeout_ms, 0);
    int rc = u->cb->on_data ? u->cb->on_data(u, p, len, u->ud) : 0;
    if (rc < 0) {
        u->stop = true;
        return 0;   /* makes curl fail the transfer with a write error */
    }
    if (rc > 0 && !u->paused) {
        /* the data was taken; stop receiving until the client drains */
        u->paused = true;
        curl_easy_pause(u->easy, CURLPAUSE_RECV);
    }
    return len;
}

static const char *map_curl_error(struct gw_up *u, CURLcode rc)
{
    if (u->stop)
        return gw_up_err_too_big;
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return gw_up_err_connect;
    case CURLE_OPERATION_TIMEDOUT: {
        curl_off_t connect_time = 0;
        curl_easy_getinfo(u->easy, CURLINFO_CONNECT_TIME_T, &connect_time);
        return connect_time == 0 ? gw_up_err_connect_timeout : gw_up_err_timeout;
    }
    default:
        return gw_up_err_io;
    }
}

static void check_multi(struct gw_upstream *us)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(us->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct gw_up *u = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&u);
        if (!u || u->done)
            continue;
        CURLcode rc = msg->data.result;
        if (rc == CURLE_OK) {
            if (!u->head_done) {
                long code = 0;
                curl_easy_getinfo(u->easy, CURLINFO_RESPONSE_CODE, &code);
                u->status = (int)code;
                head_complete(u);
            }
            finish(u, NULL);
        } else {
            finish(u, map_curl_error(u, rc));
        }
    }
}

struct gw_up *gw_up_start(struct gw_upstream *us, const struct gw_up_opts *o,
                          const struct gw_up_callbacks *cb, void *ud)
{
    struct gw_up *u = gw_calloc(1, sizeof(*u));
    u->us = us;
    u->cb = cb;
    u->ud = ud;
    u->req_headers = o->headers;
    u->first_byte_timeout_ms = o->first_byte_timeout_ms;
    u->idle_timeout_ms = o->idle_timeout_ms;
    uv_timer_init(us->loop, &u->timer);
    u->timer.data = u;
    CURL *e = us->nidle ? us->idle[--us->nidle] : curl_easy_init();
    if (!e) {
        u->done = true;
        up_destroy(u);
        return NULL;
    }
    u->easy = e;
    curl_easy_setopt(e, CURLOPT_URL, o->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, u);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, u->req_headers);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, u);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, u);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long)(o->buffer_size ? o->buffer_size : 16384));
    if (us->no_proxy)
        curl_easy_setopt(e, CURLOPT_PROXY, ""); /* spares curl the environment lookups */
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(o->connect_timeout_ms ? o->connect_timeout_ms : 2000));
    if (o->total_timeout_ms)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)o->total_timeout_ms);
    if (o->method && strcmp(o->method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, o->body ? o->body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
    }
    arm_deadline(u);
    if (curl_multi_add_handle(us->multi, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        u->easy = NULL;
        u->done = true;
        up_destroy(u);
        return NULL;
    }
    us->active++;
    u->next = us->list;
    if (us->list)
        us->list->prev = u;
    us->list = u;
    return u;
}

void gw_up_pause(struct gw_up *u)
{
    if (u->done || u->paused)
        return;
    u->paused = true;
    curl_easy_pause(u->easy, CURLPAUSE_RECV);
}

void gw_up_resume(struct gw_up *u)
{
    if (u->done || !u->paused)
        return;
    u->paused = false;
    if (u->idle_timeout_ms)
        uv_timer_start(&u->timer, on_up_timer, u->idle_timeout_ms, 0);
    /* may deliver buffered data through on_write right here */
    curl_easy_pause(u->easy, CURLPAUSE_CONT);
}

void gw_up_cancel(struct gw_up *u)
{
    if (!u || u->done)
        return;
    u->done = true;
    up_destroy(u);
}

gw_str gw_up_header(const struct gw_up *u, const char *name)
{
    size_t off = 0;
    while (off < u->hdrs_len) {
        const char *n = u->hdrs + off;
        size_t nl = strlen(n);
        const char *v = n + nl + 1;
        size_t vl = strlen(v);
        if (strcasecmp(n, name) == 0)
            return (gw_str){v, vl};
        off += nl + vl + 2;
    }
    return GW_STR_NULL;
}

int gw_up_status(const struct gw_up *u)
{
    return u->status;
}

uint64_t gw_up_first_byte_ns(const struct gw_up *u)
{
    return u->first_byte_ns;
}

static void us_closed(uv_handle_t *h)
{
    struct gw_upstream *us = h->data;
    while (us->nidle)
        curl_easy_cleanup(us->idle[--us->nidle]);
    /* closes pooled connections; may call on_socket(REMOVE) */
    curl_multi_cleanup(us->multi);
    for (size_t i = 0; i < us->nbyfd; i++) {
        struct sock_ctx *sc = us->byfd[i];
        if (sc) {
            uv_poll_stop(&sc->poll);
            uv_close((uv_handle_t *)&sc->poll, on_sock_closed);
        }
    }
    free(us->byfd);
    free(us);
}

void gw_upstream_free(struct gw_upstream *us)
{
    /* transfers still registered are cancelled by their owners first; any
     * left are detached here without callbacks */
    while (us->list)
        finish(us->list, gw_up_err_cancelled);
    uv_timer_stop(&us->timer);
    uv_close((uv_handle_t *)&us->timer, us_closed);
}
