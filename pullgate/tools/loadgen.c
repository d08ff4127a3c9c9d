/* A native load worker for the overload benchmark: the same jobs as pullgate/tools/openloop.py's Python workers,
 * at a fraction of their CPU (docs/overload.md, "A generator in C").
 *
 * Why it exists: the benchmark's load runs on the same two cores as the system it overloads. A Python worker spends
 * ~0.3-0.5 ms of CPU per gRPC call (grpc's call machinery under asyncio), so at 3x capacity it took 0.5-0.6 of the
 * two cores, and the system under test got that much less. This worker speaks gRPC over HTTP/2 with libnghttp2 and
 * TLS with OpenSSL, in one thread on epoll, and costs a few microseconds per call.
 *
 * It speaks a line protocol on stdin and stdout (pullgate/tools/native.py drives it), one job after another:
 *
 *   job <worker> <workers> <callers> <seconds> <deadline> <pause>     a closed loop when callers > 0
 *   path <grpc method path>
 *   target <host> <port> <server name> <ca|-> <cert|-> <key|-> <token|->   plaintext when ca is "-"
 *   phase <count> <rate> <start>                                  open loop: slots start + j / rate, j < count
 *   body <hex>                                                    request messages, taken in turn by slot
 *   end
 *   -> "ready" once connected;  <- the origin (CLOCK_MONOTONIC seconds, Python's time.monotonic())
 *   -> "s <phase> <target> <due> <lag> <latency> <code> <overloaded> <degraded> <edge> <relayed>" per request,
 *      then "done <cpu seconds>"
 *
 * The schedule, the fields and their meaning are openloop.py's: request k of the open loop is due at its slot,
 * goes out then whatever earlier ones did, and its latency and deadline count from when it was due. A request the
 * deadline overtakes is cancelled (RST_STREAM) and recorded DEADLINE_EXCEEDED, as grpc's own client does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_TARGETS 16
#define MAX_PHASES 32
#define MAX_BODIES 64
#define MAX_BODY 1024
#define MAX_CALLERS 1024
#define MAX_RESPONSE 65536
#define CONNECT_TIMEOUT 30 /* seconds, as the Python worker waits for its channel */

static const char *CODES[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                              "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                              "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
                              "UNAUTHENTICATED"};
enum { OK = 0, CANCELLED = 1, UNKNOWN = 2, DEADLINE_EXCEEDED = 4, RESOURCE_EXHAUSTED = 8, INTERNAL = 13,
       UNAVAILABLE = 14, UNAUTHENTICATED = 16, PERMISSION_DENIED = 7, UNIMPLEMENTED = 12 };

static void die(const char *format, ...) {
    va_list args;
    va_start(args, format);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, format, args);
    fprintf(stderr, "\n");
    va_end(args);
    exit(2);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* ---- the job ---- */

typedef struct {
    char host[256], port[16], name[256], ca[1024], cert[1024], key[1024], token[4096];
} Target;

typedef struct {
    long count;
    double rate, start;
} Phase;

typedef struct {
    int worker, workers, callers;
    double seconds, deadline, pause;
    char path[512];
    Target targets[MAX_TARGETS];
    int ntargets;
    Phase phases[MAX_PHASES];
    int nphases;
    unsigned char bodies[MAX_BODIES][MAX_BODY];
    size_t body_len[MAX_BODIES];
    int nbodies;
} Job;

/* ---- one request and its answer ---- */

struct Conn;

typedef struct {
    int phase, target, caller;
    size_t body, body_sent; /* which request body, and how much of it nghttp2 has taken */
    double due, sent, end;
    int32_t stream;
    int code;         /* -1 until known */
    int http_status;  /* 0 until seen */
    int overloaded, degraded, edge, relayed, done;
    unsigned char *response;
    size_t response_len;
} Shot;

typedef struct Conn {
    int fd;
    SSL *ssl;
    nghttp2_session *session;
    unsigned char *out;
    size_t out_len, out_cap;
    int want_write, dead;
} Conn;

static Job job;
static Conn conns[MAX_TARGETS];
static Shot *shots;
static size_t nshots, shots_cap;
static size_t oldest; /* every shot before it is done */
static long inflight;
static int epfd, tfd;
static double origin; /* the schedule's origin, CLOCK_MONOTONIC seconds; shots' `due` count from it */

/* A shot as nghttp2 keeps it with its stream: its index, plus one (the array moves as it grows). */
static Shot *shot_of(nghttp2_session *session, int32_t stream) {
    uintptr_t index = (uintptr_t)nghttp2_session_get_stream_user_data(session, stream);
    return index ? &shots[index - 1] : NULL;
}

static Shot *new_shot(void) {
    if (nshots == shots_cap) {
        shots_cap = shots_cap ? shots_cap * 2 : 4096;
        shots = realloc(shots, shots_cap * sizeof(Shot));
        if (!shots) die("out of memory");
    }
    Shot *s = &shots[nshots++];
    memset(s, 0, sizeof(*s));
    s->code = -1;
    s->caller = -1;
    return s;
}

/* ---- reading the job ---- */

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void copy_arg(char *to, size_t size, const char *from) {
    if (strcmp(from, "-") == 0) from = "";
    if (strlen(from) >= size) die("argument too long: %.40s...", from);
    strcpy(to, from);
}

/* Reads one job; 0 at the end of stdin. */
static int read_job(void) {
    char line[16384];
    memset(&job, 0, sizeof(job));
    int started = 0;
    while (fgets(line, sizeof(line), stdin)) {
        line[strcspn(line, "\n")] = 0;
        char word[16];
        if (sscanf(line, "%15s", word) != 1) continue;
        started = 1;
        if (strcmp(word, "end") == 0) return 1;
        if (strcmp(word, "job") == 0) {
            if (sscanf(line, "job %d %d %d %lf %lf %lf", &job.worker, &job.workers, &job.callers, &job.seconds,
                       &job.deadline, &job.pause) != 6)
                die("bad job line: %s", line);
        } else if (strcmp(word, "path") == 0) {
            char path[512];
            if (sscanf(line, "path %511s", path) != 1) die("bad path line: %s", line);
            copy_arg(job.path, sizeof(job.path), path);
        } else if (strcmp(word, "target") == 0) {
            if (job.ntargets == MAX_TARGETS) die("more than %d targets", MAX_TARGETS);
            static char host[256], port[16], name[256], ca[1024], cert[1024], key[1024], token[4096];
            if (sscanf(line, "target %255s %15s %255s %1023s %1023s %1023s %4095s", host, port, name, ca, cert, key,
                       token) != 7 || strlen(token) == 4095)
                die("bad target line (or a field too long): %.200s", line);
            Target *t = &job.targets[job.ntargets++];
            copy_arg(t->host, sizeof(t->host), host);
            copy_arg(t->port, sizeof(t->port), port);
            copy_arg(t->name, sizeof(t->name), name);
            copy_arg(t->ca, sizeof(t->ca), ca);
            copy_arg(t->cert, sizeof(t->cert), cert);
            copy_arg(t->key, sizeof(t->key), key);
            copy_arg(t->token, sizeof(t->token), token);
        } else if (strcmp(word, "phase") == 0) {
            if (job.nphases == MAX_PHASES) die("more than %d phases", MAX_PHASES);
            Phase *p = &job.phases[job.nphases++];
            if (sscanf(line, "phase %ld %lf %lf", &p->count, &p->rate, &p->start) != 3 || p->rate <= 0)
                die("bad phase line: %s", line);
        } else if (strcmp(word, "body") == 0) {
            if (job.nbodies == MAX_BODIES) die("more than %d bodies", MAX_BODIES);
            const char *hex = line + 4;
            while (*hex == ' ') hex++;
            size_t n = strlen(hex) / 2;
            if (n + 5 > MAX_BODY) die("body too long");
            unsigned char *b = job.bodies[job.nbodies];
            b[0] = 0; /* not compressed, then the length, big-endian: gRPC's message framing */
            b[1] = (unsigned char)(n >> 24), b[2] = (unsigned char)(n >> 16), b[3] = (unsigned char)(n >> 8);
            b[4] = (unsigned char)n;
            for (size_t i = 0; i < n; i++) {
                int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
                if (hi < 0 || lo < 0) die("bad hex in body");
                b[5 + i] = (unsigned char)(hi * 16 + lo);
            }
            job.body_len[job.nbodies++] = n + 5;
        } else {
            die("unknown line: %s", line);
        }
    }
    if (started) die("stdin ended inside a job");
    return 0;
}

/* ---- sending and receiving bytes ---- */

static void watch(Conn *c) {
    struct epoll_event ev = {.events = EPOLLIN | (c->want_write ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void fail_conn(Conn *c);

/* Writes what nghttp2 has queued, as far as the socket takes it. */
static void flush(Conn *c) {
    if (c->dead) return;
    for (;;) {
        if (c->out_len == 0) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->session, &data);
            if (n < 0) die("nghttp2: %s", nghttp2_strerror((int)n));
            if (n == 0) break;
            if (c->out_cap < (size_t)n) {
                c->out_cap = (size_t)n * 2;
                c->out = realloc(c->out, c->out_cap);
                if (!c->out) die("out of memory");
            }
            memcpy(c->out, data, (size_t)n);
            c->out_len = (size_t)n;
        }
        int written;
        if (c->ssl) {
            ERR_clear_error(); /* SSL_get_error reads the thread's queue: an old error would fail this call */
            written = SSL_write(c->ssl, c->out, (int)c->out_len);
            if (written <= 0) {
                int e = SSL_get_error(c->ssl, written);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) break;
                fail_conn(c);
                return;
            }
        } else {
            written = (int)write(c->fd, c->out, c->out_len);
            if (written < 0) {
                if (errno == EAGAIN || errno == EINTR) break;
                fail_conn(c);
                return;
            }
        }
        memmove(c->out, c->out + written, c->out_len - (size_t)written);
        c->out_len -= (size_t)written;
    }
    int want = c->out_len > 0;
    if (want != c->want_write) {
        c->want_write = want;
        watch(c);
    }
}

static void receive(Conn *c) {
    unsigned char buffer[65536];
    while (!c->dead) {
        int n;
        if (c->ssl) {
            ERR_clear_error();
            n = SSL_read(c->ssl, buffer, sizeof(buffer));
            if (n <= 0) {
                int e = SSL_get_error(c->ssl, n);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
                fail_conn(c);
                return;
            }
        } else {
            n = (int)read(c->fd, buffer, sizeof(buffer));
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
            if (n <= 0) {
                fail_conn(c);
                return;
            }
        }
        ssize_t used = nghttp2_session_mem_recv(c->session, buffer, (size_t)n);
        if (used < 0) {
            fail_conn(c);
            return;
        }
    }
    flush(c);
    /* A session nghttp2 has ended (a GOAWAY sent after a protocol error, or received and served out) takes nothing
     * more: without this, what it had in flight would wait for its deadlines. */
    if (!c->dead && !nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session)) fail_conn(c);
}

/* ---- answers ---- */

/* The code an answer without grpc-status gets, from its HTTP status (gRPC's "HTTP to gRPC status" table). */
static int code_of_http(int status) {
    switch (status) {
    case 400: return INTERNAL;
    case 401: return UNAUTHENTICATED;
    case 403: return PERMISSION_DENIED;
    case 404: return UNIMPLEMENTED;
    case 429: case 502: case 503: case 504: return UNAVAILABLE;
    default: return UNKNOWN;
    }
}

/* Reads a varint at p[*i] (before `end`) into *out; 0 when it is cut short or longer than 64 bits. */
static int varint(const unsigned char *p, size_t *i, size_t end, uint64_t *out) {
    *out = 0;
    for (int shift = 0; *i < end && shift < 64; shift += 7) {
        unsigned char byte = p[(*i)++];
        *out |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) return 1;
    }
    return 0;
}

/* Whether a GetOrderViewResponse (after gRPC's 5-byte framing) has `degraded = 3` set: top-level fields only. */
static int degraded(const unsigned char *p, size_t n) {
    if (n < 5) return 0;
    size_t i = 5, end = 5 + ((size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4]);
    if (end > n) end = n;
    while (i < end) {
        uint64_t key, value;
        if (!varint(p, &i, end, &key)) return 0;
        int wire = (int)(key & 7);
        uint64_t skip;
        if (wire == 0) {
            if (!varint(p, &i, end, &value)) return 0;
            if (key >> 3 == 3) return value != 0;
            continue;
        } else if (wire == 2) {
            if (!varint(p, &i, end, &skip)) return 0;
        } else if (wire == 1) {
            skip = 8;
        } else if (wire == 5) {
            skip = 4;
        } else {
            return 0;
        }
        if (skip > end - i) return 0;
        i += skip;
    }
    return 0;
}

static void schedule_caller(int caller, double at);

static void finish(Shot *s, int code) {
    if (s->done) return;
    s->done = 1;
    s->end = now();
    s->code = code;
    if (code == OK && s->response_len <= MAX_RESPONSE) s->degraded = degraded(s->response, s->response_len);
    if (code == OK) s->overloaded = s->edge = s->relayed = 0; /* as Python: from a failure's own trailers only */
    free(s->response);
    s->response = NULL;
    inflight--;
    if (s->caller >= 0) {
        /* A refusal pauses its caller as a client that honours "overloaded" would; a connection that cannot take
         * requests any more pauses it too, instead of failing thousands of requests a second. */
        Conn *c = &conns[s->target];
        int refused = code == RESOURCE_EXHAUSTED || code == CANCELLED;
        int closed = c->dead || (c->session && !nghttp2_session_check_request_allowed(c->session));
        schedule_caller(s->caller, s->end + (refused || closed ? job.pause : 0.0));
    }
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user) {
    (void)flags, (void)user;
    Shot *s = shot_of(session, frame->hd.stream_id);
    if (!s || s->done) return 0;
#define IS(literal) (namelen == sizeof(literal) - 1 && memcmp(name, literal, namelen) == 0)
    if (IS(":status")) {
        s->http_status = atoi((const char *)value);
    } else if (IS("grpc-status")) {
        int code = 0;
        for (size_t i = 0; i < valuelen && code <= 16; i++)
            code = value[i] >= '0' && value[i] <= '9' ? code * 10 + (value[i] - '0') : 99;
        s->code = valuelen > 0 && code <= 16 ? code : UNKNOWN; /* not a status: UNKNOWN, never OK */
    } else if (IS("grpc-message")) {
        s->edge |= valuelen >= 5 && memcmp(value, "edge:", 5) == 0;
    } else if (IS("resilience-overloaded")) {
        s->overloaded |= valuelen == 1 && value[0] == '1';
    } else if (IS("resilience-failure-origin")) {
        s->relayed = 1;
    }
#undef IS
    return 0;
}

static int on_data(nghttp2_session *session, uint8_t flags, int32_t stream, const uint8_t *data, size_t len,
                   void *user) {
    (void)flags, (void)user;
    Shot *s = shot_of(session, stream);
    if (!s || s->done) return 0;
    if (s->response_len + len > MAX_RESPONSE) {
        s->response_len = MAX_RESPONSE + 1; /* too long to read: no more appended, `degraded` reads none of it */
        return 0;
    }
    unsigned char *grown = realloc(s->response, s->response_len + len);
    if (!grown) die("out of memory");
    s->response = grown;
    memcpy(s->response + s->response_len, data, len);
    s->response_len += len;
    return 0;
}

static int on_close(nghttp2_session *session, int32_t stream, uint32_t error, void *user) {
    (void)user;
    Shot *s = shot_of(session, stream);
    if (!s || s->done) return 0;
    int code = s->code;
    if (code < 0) {
        /* RST_STREAM's code as grpc maps it (gRPC's PROTOCOL-HTTP2, "Errors") */
        if (error == NGHTTP2_REFUSED_STREAM) code = UNAVAILABLE;
        else if (error == NGHTTP2_CANCEL) code = CANCELLED;
        else if (error == NGHTTP2_ENHANCE_YOUR_CALM) code = RESOURCE_EXHAUSTED;
        else if (error == NGHTTP2_INADEQUATE_SECURITY) code = PERMISSION_DENIED;
        else if (error != NGHTTP2_NO_ERROR) code = INTERNAL;
        else code = s->http_status && s->http_status != 200 ? code_of_http(s->http_status) : UNKNOWN;
    }
    finish(s, code);
    return 0;
}

/* A connection that broke: what it had in flight fails UNAVAILABLE, as it would in grpc, and so does what is sent
 * to it later (this worker does not reconnect: the benchmark never breaks its own entry). */
static void fail_conn(Conn *c) {
    if (c->dead) return;
    c->dead = 1;
    ERR_clear_error();
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    for (size_t i = oldest; i < nshots; i++)
        if (!shots[i].done && shots[i].sent > 0 && &conns[shots[i].target] == c) finish(&shots[i], UNAVAILABLE);
}

/* ---- sending a request ---- */

static ssize_t read_body(nghttp2_session *session, int32_t stream, uint8_t *buf, size_t length, uint32_t *flags,
                         nghttp2_data_source *source, void *user) {
    (void)source, (void)user;
    Shot *s = shot_of(session, stream);
    if (!s) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    size_t left = job.body_len[s->body] - s->body_sent;
    size_t n = left < length ? left : length;
    memcpy(buf, job.bodies[s->body] + s->body_sent, n);
    s->body_sent += n;
    if (s->body_sent == job.body_len[s->body]) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

#define HEADER(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}

static void send_shot(Shot *s, long k, double timeout) {
    Conn *c = &conns[s->target];
    s->sent = now();
    inflight++;
    if (c->dead) {
        finish(s, UNAVAILABLE);
        return;
    }
    char grpc_timeout[32], authorization[4200];
    long micros = (long)(timeout * 1e6 > 1 ? timeout * 1e6 : 1); /* gRPC allows at most 8 digits */
    if (micros < 100000000) snprintf(grpc_timeout, sizeof(grpc_timeout), "%ldu", micros);
    else snprintf(grpc_timeout, sizeof(grpc_timeout), "%ldm", micros / 1000);
    Target *t = &job.targets[s->target];
    char authority[300]; /* as grpc's: the TLS name it checks, or host:port in plaintext */
    if (t->ca[0]) snprintf(authority, sizeof(authority), "%s", t->name);
    else if (strchr(t->host, ':')) snprintf(authority, sizeof(authority), "[%s]:%s", t->host, t->port);
    else snprintf(authority, sizeof(authority), "%s:%s", t->host, t->port);
    nghttp2_nv headers[8] = {
        HEADER(":method", "POST"), HEADER(":scheme", t->ca[0] ? "https" : "http"), HEADER(":path", job.path),
        HEADER(":authority", authority), HEADER("content-type", "application/grpc"), HEADER("te", "trailers"),
        HEADER("grpc-timeout", grpc_timeout),
    };
    size_t count = 7;
    if (t->token[0]) {
        snprintf(authorization, sizeof(authorization), "Bearer %s", t->token);
        headers[count++] = (nghttp2_nv)HEADER("authorization", authorization);
    }
    s->body = (size_t)(k % job.nbodies), s->body_sent = 0;
    nghttp2_data_provider body = {.read_callback = read_body};
    int32_t stream = nghttp2_submit_request(c->session, NULL, headers, count, &body, (void *)(uintptr_t)(s - shots + 1));
    if (stream < 0) {
        finish(s, INTERNAL);
        return;
    }
    s->stream = stream;
    flush(c);
}

/* ---- connecting ---- */

static SSL_CTX *context_for(const Target *t) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) die("SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_load_verify_locations(ctx, t->ca, NULL) != 1) die("cannot read the CA %s", t->ca);
    if (t->cert[0] && SSL_CTX_use_certificate_chain_file(ctx, t->cert) != 1) die("cannot read %s", t->cert);
    if (t->key[0] && SSL_CTX_use_PrivateKey_file(ctx, t->key, SSL_FILETYPE_PEM) != 1) die("cannot read %s", t->key);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x02h2", 3);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    return ctx;
}

static void connect_to(Conn *c, const Target *t) {
    memset(c, 0, sizeof(*c));
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *found;
    int e = getaddrinfo(t->host, t->port, &hints, &found);
    if (e) die("cannot resolve %s: %s", t->host, gai_strerror(e));
    c->fd = -1;
    for (struct addrinfo *a = found; a && c->fd < 0; a = a->ai_next) {
        c->fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (c->fd >= 0 && connect(c->fd, a->ai_addr, a->ai_addrlen) != 0) {
            close(c->fd);
            c->fd = -1;
        }
    }
    freeaddrinfo(found);
    if (c->fd < 0) die("cannot connect to %s:%s: %s", t->host, t->port, strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval patience = {.tv_sec = CONNECT_TIMEOUT}; /* the handshake blocks, but not for ever */
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof(patience));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &patience, sizeof(patience));
    if (t->ca[0]) {
        SSL_CTX *ctx = context_for(t);
        c->ssl = SSL_new(ctx);
        SSL_CTX_free(ctx); /* the SSL holds its own reference */
        SSL_set_tlsext_host_name(c->ssl, t->name);
        SSL_set1_host(c->ssl, t->name);
        SSL_set_fd(c->ssl, c->fd);
        if (SSL_connect(c->ssl) != 1) {
            unsigned long error = ERR_get_error();
            die("TLS to %s:%s (as %s): %s", t->host, t->port, t->name,
                error ? ERR_reason_error_string(error) : "handshake failed");
        }
        const unsigned char *alpn;
        unsigned int alpn_len;
        SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
        if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0) die("%s:%s did not agree to HTTP/2", t->host, t->port);
    }
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    nghttp2_session_callbacks *callbacks;
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_close);
    nghttp2_session_client_new(&c->session, callbacks, c);
    nghttp2_session_callbacks_del(callbacks);
    nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, settings, 1);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
    flush(c);
}

static void disconnect(Conn *c) {
    if (!c->dead) epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->session) nghttp2_session_del(c->session);
    if (c->ssl) SSL_free(c->ssl);
    close(c->fd);
    free(c->out);
    memset(c, 0, sizeof(*c));
}

/* ---- the closed loop's callers ---- */

static double caller_at[MAX_CALLERS]; /* when each caller sends next; INFINITY while it waits for an answer */
static long sequence;                 /* requests the closed loop has sent */

static void schedule_caller(int caller, double at) { caller_at[caller] = at; }

/* ---- the loop ---- */

static void arm(double at) {
    struct itimerspec when = {0};
    if (at < 1e-9) at = 1e-9;
    when.it_value.tv_sec = (time_t)at;
    when.it_value.tv_nsec = (long)((at - floor(at)) * 1e9);
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &when, NULL);
}

/* Cancels what its deadline overtook: the earliest deadlines are the oldest requests. */
static double expire(double t) {
    while (oldest < nshots && shots[oldest].done) oldest++;
    double next = INFINITY;
    for (size_t i = oldest; i < nshots; i++) {
        Shot *s = &shots[i];
        if (s->done) continue;
        double lag = s->sent - (origin + s->due);
        double limit = s->sent + (job.callers ? job.deadline : fmax(0.001, job.deadline - lag));
        if (limit > t) {
            next = limit;
            break;
        }
        Conn *c = &conns[s->target];
        if (!c->dead) nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, s->stream, NGHTTP2_CANCEL);
        s->overloaded = s->edge = s->relayed = 0; /* given up here: no trailers of its own */
        finish(s, DEADLINE_EXCEEDED);
        flush(c);
    }
    return next;
}

/* Waits up to `timeout` ms (-1: until the timer or a socket) and handles what is ready. */
static void handle(int timeout) {
    struct epoll_event events[64];
    int n = epoll_wait(epfd, events, 64, timeout);
    for (int i = 0; i < n; i++) {
        if (events[i].data.ptr == NULL) {
            uint64_t expirations;
            if (read(tfd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN) die("timerfd read");
            continue;
        }
        Conn *c = events[i].data.ptr;
        if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) receive(c);
        if (!c->dead && events[i].events & EPOLLOUT) flush(c);
    }
}

static void run(void) {
    long total = 0;
    for (int p = 0; p < job.nphases; p++) total += job.phases[p].count;
    long k = job.worker; /* the next slot of this worker: k % workers == worker */
    int phase = 0;
    long before = 0; /* slots in the phases before `phase` */
    double end = origin + job.seconds;
    for (int i = 0; i < job.callers; i++) caller_at[i] = origin;
    for (;;) {
        double t = now(), next = INFINITY;
        if (job.callers) {
            for (int i = 0; i < job.callers && t < end; i++) {
                if (caller_at[i] <= t) {
                    Shot *s = new_shot();
                    long n = sequence++;
                    s->phase = -1, s->caller = i, s->target = (int)(n % job.ntargets);
                    caller_at[i] = INFINITY;
                    send_shot(s, n, job.deadline);
                    s->due = s->sent - origin; /* as Python: due, lag 0 and latency all from when it was sent */
                    t = now();
                }
                if (caller_at[i] < next) next = caller_at[i];
            }
            if (t < end && end < next) next = end;
            if (t >= end && inflight == 0) break;
        } else {
            while (k < total) {
                while (k >= before + job.phases[phase].count) before += job.phases[phase++].count;
                double due = job.phases[phase].start + (double)(k - before) / job.phases[phase].rate;
                if (origin + due > t) {
                    next = origin + due;
                    break;
                }
                Shot *s = new_shot();
                s->phase = phase, s->target = (int)((k / job.workers) % job.ntargets), s->due = due;
                double lag = t - (origin + due);
                send_shot(s, k, job.deadline - lag > 0.001 ? job.deadline - lag : 0.001);
                k += job.workers;
                t = now();
            }
            if (k >= total && inflight == 0) break;
        }
        handle(0); /* what has arrived counts before its deadline is judged */
        double deadline = expire(now());
        if (deadline < next) next = deadline;
        if (isfinite(next)) arm(next);
        handle(isfinite(next) ? -1 : 1000);
    }
}

static double cpu_seconds(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 + (double)u.ru_stime.tv_sec +
           (double)u.ru_stime.tv_usec / 1e6;
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOFBF, 1 << 20);
    epfd = epoll_create1(0);
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &ev);
    while (read_job()) {
        if (job.ntargets == 0 || job.nbodies == 0 || !job.path[0]) die("a job needs a target, a body and a path");
        if (job.callers > MAX_CALLERS) die("more than %d callers", MAX_CALLERS);
        if (job.workers < 1 || job.worker < 0 || job.worker >= job.workers) die("bad worker %d of %d", job.worker,
                                                                                job.workers);
        for (int i = 0; i < job.ntargets; i++) connect_to(&conns[i], &job.targets[i]);
        printf("ready\n");
        fflush(stdout);
        char line[64];
        if (!fgets(line, sizeof(line), stdin) || sscanf(line, "%lf", &origin) != 1) die("expected the origin");
        nshots = 0, oldest = 0, inflight = 0, sequence = 0;
        double cpu = cpu_seconds();
        run();
        cpu = cpu_seconds() - cpu;
        for (int i = 0; i < job.ntargets; i++) disconnect(&conns[i]);
        for (size_t i = 0; i < nshots; i++) {
            Shot *s = &shots[i];
            double latency = s->end - origin - s->due;
            printf("s %d %d %.9f %.9f %.9f %s %d %d %d %d\n", s->phase, s->target, s->due,
                   s->caller >= 0 ? 0.0 : s->sent - origin - s->due, s->caller >= 0 ? s->end - s->sent : latency,
                   CODES[s->code], s->overloaded, s->degraded, s->edge, s->relayed);
        }
        printf("done %.6f\n", cpu);
        fflush(stdout);
    }
    return 0;
}
