/* fastbn's thread team: parallel loops over fixed-size work units that the
   calling thread can always finish alone.  Every parallel kernel is built on
   it (through fastbn/_parallel.pxd); new kernels should be too.

   A kernel is a sequence of loops over work units fixed by the shape (never
   by the thread count), each unit writing its own outputs (a unit of a
   reduction writes its partial; a later loop adds the partials in unit order).
   fastbn_parallel_for(units, nthreads, fn, ctx) calls fn(ctx, begin, end, slot)
   on runs of units that together cover [0, units) once:

   - Claims.  Units are handed out from per-slot ranges, each slot's share of
     a static split (a thread streams through its contiguous part, then steals
     from the others' fronts), a run at a time by one atomic operation: a
     quarter of what is left of the range (guided), so that runs are long at
     first and the threads finish together.  A thread that does not come, or
     comes late, leaves its units to the others.
   - No join on absent threads.  The caller (slot 0) posts invitations to up
     to nthreads - 1 workers, then claims units itself.  An invitation no
     worker has accepted when the units run out is withdrawn: the caller never
     waits for a worker that has not started, only for runs a worker holds.
     One loop follows another with no barrier but the caller's return.
   - Wait policy.  A worker spins (pause, a look at the clock now and then)
     for the next loop, up to FASTBN_SPIN_NS, then sleeps on a futex (a
     condition variable off Linux) until invited.  It sleeps at once, and is
     not woken for loops for a backoff period (FASTBN_BACKOFF_NS, doubled while
     it keeps happening, up to FASTBN_BACKOFF_MAX_NS), when it finds the core
     wanted by another process: a gap in its clock while it spun, time lost
     while it held units, a caller that waited long for it, or the caller's
     own CPU under it.  Under the Linux scheduler's group fairness (a
     session's or a container's threads share one slice of each CPU) a thread
     on a contended core only takes time from its own caller, so the team
     then shrinks to the caller alone, and grows back when a probe after the
     backoff finds the core free.  A caller waiting for a worker's run spins
     FASTBN_WAIT_SPIN_NS, then sleeps.

   With OpenMP (libgomp) regions, a BatchNorm call that took 1.3 ms on one
   thread took 32 ms on 2 threads with one busy process competing on this
   2-core machine, every call: each phase's barrier and the region's end
   waited for the descheduled thread.  docs/threads.md has the figures.

   Results do not depend on which thread runs a unit, nor on when, so they are
   the same bits at any thread count and under any schedule;
   fastbn_parallel_set_order() hands units out one at a time in reverse or
   random order to test that.  slot (< nthreads) indexes per-thread scratch.
   One caller at a time uses the team; a concurrent caller (another Python
   thread, or a nested loop) runs its loop alone, as does a loop of one unit
   or nthreads 1.  A forked child starts workers of its own.  Needs GCC/Clang
   atomics and POSIX threads; elsewhere every loop runs on the calling thread. */
#ifndef FASTBN_PARALLEL_H
#define FASTBN_PARALLEL_H
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef void (*fastbn_unit_fn)(void* ctx, Py_ssize_t begin, Py_ssize_t end, int slot);

#if defined(__GNUC__) && (defined(__unix__) || defined(__APPLE__))
#define FASTBN_TEAM 1
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <time.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#else
#define FASTBN_TEAM 0
#endif

#define FASTBN_MAX_TEAM 256
/* Workers spin this long for the next loop before sleeping: longer than the
   Python between a training step's kernels (tens of microseconds) or between
   its steps, about as long as libgomp's workers (5 ms here): waking a sleeping
   virtual CPU took up to a few hundred microseconds. */
#define FASTBN_SPIN_NS 5000000
/* A gap this long between two looks at the clock while spinning, or lost
   while running units: this thread was descheduled (another process wants the
   core: the scheduler gives a busy competitor 0.75-3 ms at a time; interrupts
   and a virtual machine's host took up to a few hundred microseconds here). */
#define FASTBN_GAP_NS 500000
/* A worker that sees a loop this long after it was posted leaves it to the
   caller (it would only come to wait for the last units). */
#define FASTBN_LATE_START_NS 200000
/* A worker that slept because it was descheduled is woken for a loop only
   after this long asleep, doubled each time it is descheduled again within
   FASTBN_CALM_NS of waking, up to FASTBN_BACKOFF_MAX_NS: meanwhile the caller
   runs loops alone, as fast as one thread can on a contended core. */
#define FASTBN_BACKOFF_NS 4000000
#define FASTBN_BACKOFF_MAX_NS 1024000000
#define FASTBN_CALM_NS 100000000
/* A caller spins this long for a worker's running unit, then sleeps. */
#define FASTBN_WAIT_SPIN_NS 50000

enum { FASTBN_IDLE = 0, FASTBN_POSTED = 1, FASTBN_RUNNING = 2 };
enum { FASTBN_AWAKE = 0, FASTBN_IDLE_SLEEP = 1, FASTBN_CONTENDED_SLEEP = 2 };

#if FASTBN_TEAM

typedef struct {
    int state;        /* IDLE -> POSTED (caller) -> RUNNING (worker) -> IDLE, or
                         POSTED -> IDLE: withdrawn by the caller */
    int sleeping;     /* the worker sleeps (or is about to) on state: AWAKE, or why */
    int waiting;      /* the caller sleeps (or is about to) on state */
    int late;         /* the caller waited long for this worker's units */
    int64_t asleep_at, backoff;  /* a contended sleep's start, and how long to leave it */
} __attribute__((aligned(64))) fastbn_mailbox;

typedef struct {
    Py_ssize_t next, end;   /* slot s's units: next to claim, end */
} __attribute__((aligned(64))) fastbn_range;

/* A claim takes this fraction of what is left of a range (guided scheduling):
   one atomic operation a run of units, not a unit (2048 tiny units of max
   pooling's gradient lost 15% to one a unit), and short runs at the end, so
   that the threads finish together (runs of an eighth of a share left 9% of
   that loop to one thread). */
#define FASTBN_GUIDE 4

static struct {
    int lock;                 /* a caller holds the team */
    int workers;              /* started */
    int team;                 /* threads of the current loop */
    int caller_cpu;           /* where the last loop's caller ran (-1: unknown) */
    int64_t posted_at;        /* when it posted its invitations */
    fastbn_unit_fn fn;
    void* ctx;
    const Py_ssize_t* order;  /* test hook: the unit handed out k-th, or NULL */
    fastbn_mailbox mail[FASTBN_MAX_TEAM - 1];
    fastbn_range ranges[FASTBN_MAX_TEAM];
#ifndef __linux__
    pthread_mutex_t mutex;
    pthread_cond_t cond;
#endif
} fastbn_pool
#ifndef __linux__
    = {.mutex = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER}
#endif
;

/* what the callers saw (written under the team's lock), and why workers
   backed off (FASTBN_WHY_*, counted atomically), for diagnosis */
enum { FASTBN_WHY_GAP, FASTBN_WHY_CALLER_CPU, FASTBN_WHY_LATE_START, FASTBN_WHY_HELD,
       FASTBN_WHY_CALLER_WAITED, FASTBN_WHYS };
static struct {
    int64_t loops, invited, withdrawn, waits, sleeps, wait_ns;
    int64_t why[FASTBN_WHYS];
} fastbn_stats;

static int fastbn_order_mode = 0;      /* 0 in order, 1 reversed, 2 random */
static uint64_t fastbn_order_seed = 0;

static inline void fastbn_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline int64_t fastbn_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static inline int fastbn_load(int* p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline void fastbn_store(int* p, int v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }

/* Sleep while *p == v (may return early); wake the sleepers on p. */
#ifdef __linux__
static void fastbn_wait(int* p, int v) {
    syscall(SYS_futex, p, FUTEX_WAIT_PRIVATE, v, NULL, NULL, 0);
}
static void fastbn_wake(int* p) {
    syscall(SYS_futex, p, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}
#else
static void fastbn_wait(int* p, int v) {
    pthread_mutex_lock(&fastbn_pool.mutex);
    if (fastbn_load(p) == v)
        pthread_cond_wait(&fastbn_pool.cond, &fastbn_pool.mutex);
    pthread_mutex_unlock(&fastbn_pool.mutex);
}
static void fastbn_wake(int* p) {
    (void)p;
    pthread_mutex_lock(&fastbn_pool.mutex);
    pthread_cond_broadcast(&fastbn_pool.cond);
    pthread_mutex_unlock(&fastbn_pool.mutex);
}
#endif

/* CPU time this thread has used, in nanoseconds. */
static inline int64_t fastbn_cpu_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* The CPU this thread runs on, or -1 where that cannot be known. */
static inline int fastbn_cpu(void) {
#ifdef __linux__
    return sched_getcpu();
#else
    return -1;
#endif
}

/* Spin while *p == v, for at most limit_ns: returns 1 when *p changed, 0 at
   the time limit, -1 - FASTBN_WHY_* when this thread was descheduled (a gap of FASTBN_GAP_NS
   between two looks at the clock), runs on the CPU `*avoid` (not -1): that of
   the caller, whose work a worker would only slow down there, or finds *late
   set (cleared). */
static int fastbn_spin(int* p, int v, int64_t limit_ns, const int* avoid, int* late) {
    int64_t start = fastbn_now_ns(), last = start, now;
    for (;;) {
        for (int i = 0; i < 16; i++) {
            if (__atomic_load_n(p, __ATOMIC_ACQUIRE) != v)
                return 1;
            fastbn_relax();
        }
        now = fastbn_now_ns();
        if (now - last > FASTBN_GAP_NS)
            return -1 - FASTBN_WHY_GAP;
        if (now - start > limit_ns)
            return 0;
        if (avoid != NULL) {
            int cpu = __atomic_load_n(avoid, __ATOMIC_RELAXED);
            if (cpu >= 0 && cpu == fastbn_cpu())
                return -1 - FASTBN_WHY_CALLER_CPU;
        }
        if (late != NULL && __atomic_exchange_n(late, 0, __ATOMIC_RELAXED))
            return -1 - FASTBN_WHY_CALLER_WAITED;
        last = now;
    }
}

/* Slot s claims runs of units and runs them until every range is empty: its
   own range first, then the others' in slot order. */
static void fastbn_run_units(int s) {
    int n = fastbn_pool.team;
    for (int i = 0; i < n; i++) {
        fastbn_range* r = &fastbn_pool.ranges[(s + i) % n];
        Py_ssize_t k = __atomic_load_n(&r->next, __ATOMIC_RELAXED);
        while (k < r->end) {
            Py_ssize_t end = k + (r->end - k + FASTBN_GUIDE - 1) / FASTBN_GUIDE;
            if (!__atomic_compare_exchange_n(&r->next, &k, end, 1, __ATOMIC_RELAXED,
                                             __ATOMIC_RELAXED))
                continue;  /* another thread claimed first: k is what it left */
            if (fastbn_pool.order == NULL) {
                fastbn_pool.fn(fastbn_pool.ctx, k, end, s);
            } else {
                for (; k < end; k++)
                    fastbn_pool.fn(fastbn_pool.ctx, fastbn_pool.order[k],
                                   fastbn_pool.order[k] + 1, s);
            }
            k = __atomic_load_n(&r->next, __ATOMIC_RELAXED);
        }
    }
}

static void* fastbn_worker(void* arg) {
    int w = (int)(intptr_t)arg;
    fastbn_mailbox* m = &fastbn_pool.mail[w];
    int64_t backoff = FASTBN_BACKOFF_NS, woke_at = 0;
    /* wall and CPU time when last seen awake and running or spinning: time lost
       between then and the end of a loop it took part in was lost while it held
       units (a gap while spinning is caught there) */
    int64_t wall = 0, cpu_time = 0;
    int spun = 0;
    for (;;) {
        if (spun <= 0) {
            if (spun < 0) {  /* contended: back off longer if it was soon again */
                int64_t now = fastbn_now_ns();
                __atomic_fetch_add(&fastbn_stats.why[-1 - spun], 1, __ATOMIC_RELAXED);
                backoff = now - woke_at < FASTBN_CALM_NS && backoff < FASTBN_BACKOFF_MAX_NS
                          ? 2 * backoff : FASTBN_BACKOFF_NS;
                __atomic_store_n(&m->backoff, backoff, __ATOMIC_RELAXED);
                __atomic_store_n(&m->asleep_at, now, __ATOMIC_RELAXED);
            }
            /* sleep: announce it, then look once more (the caller posts, then
               reads `sleeping`; one of the two sees the other's write) */
            fastbn_store(&m->sleeping, spun < 0 ? FASTBN_CONTENDED_SLEEP : FASTBN_IDLE_SLEEP);
            while (fastbn_load(&m->state) == FASTBN_IDLE)
                fastbn_wait(&m->state, FASTBN_IDLE);
            fastbn_store(&m->sleeping, FASTBN_AWAKE);
            woke_at = wall = fastbn_now_ns();
            cpu_time = fastbn_cpu_ns();
        }
        int expected = FASTBN_POSTED;
        int cpu = fastbn_cpu();
        if (cpu >= 0 && cpu == __atomic_load_n(&fastbn_pool.caller_cpu, __ATOMIC_RELAXED)) {
            /* on the caller's CPU: withdraw the invitation for the caller, sleep */
            __atomic_compare_exchange_n(&m->state, &expected, FASTBN_IDLE, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST);
            spun = -1 - FASTBN_WHY_CALLER_CPU;
            continue;
        }
        if (fastbn_now_ns() - __atomic_load_n(&fastbn_pool.posted_at, __ATOMIC_RELAXED) >
            FASTBN_LATE_START_NS) {
            /* so late after the post that the caller has done most of the loop:
               leave it the rest, and spin for the next one (a virtual CPU woken
               from idle can take this long; a contended one is caught spinning) */
            __atomic_compare_exchange_n(&m->state, &expected, FASTBN_IDLE, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST);
            __atomic_fetch_add(&fastbn_stats.why[FASTBN_WHY_LATE_START], 1, __ATOMIC_RELAXED);
        } else if (__atomic_compare_exchange_n(&m->state, &expected, FASTBN_RUNNING, 0,
                                               __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
            fastbn_run_units(w + 1);
            fastbn_store(&m->state, FASTBN_IDLE);
            if (fastbn_load(&m->waiting))
                fastbn_wake(&m->state);
            int64_t wall_then = wall, cpu_then = cpu_time;
            wall = fastbn_now_ns();
            cpu_time = fastbn_cpu_ns();
            if ((wall - wall_then) - (cpu_time - cpu_then) > FASTBN_GAP_NS) {
                spun = -1 - FASTBN_WHY_HELD;  /* descheduled while it held units */
                continue;
            }
        }  /* else withdrawn, or not posted yet: look again */
        spun = fastbn_spin(&m->state, FASTBN_IDLE, FASTBN_SPIN_NS, &fastbn_pool.caller_cpu,
                           &m->late);
    }
    return NULL;
}

static void fastbn_after_fork(void) {
    /* the child has only the thread that forked: no workers, no caller */
    fastbn_pool.workers = 0;
    fastbn_pool.lock = 0;
    memset(fastbn_pool.mail, 0, sizeof(fastbn_pool.mail));
}

/* Start workers until there are n (the team lock is held); fewer if the
   system refuses.  Workers block signals: those go to Python's threads. */
static void fastbn_start_workers(int n) {
    static int registered = 0;
    sigset_t all, old;
    if (!registered) {
        pthread_atfork(NULL, NULL, fastbn_after_fork);
        registered = 1;
    }
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    while (fastbn_pool.workers < n) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int err = pthread_create(&t, &attr, fastbn_worker,
                                 (void*)(intptr_t)fastbn_pool.workers);
        pthread_attr_destroy(&attr);
        if (err)
            break;
        fastbn_pool.workers++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* The test hook's order of `units` units (NULL in order). */
static Py_ssize_t* fastbn_make_order(Py_ssize_t units) {
    if (fastbn_order_mode == 0)
        return NULL;
    Py_ssize_t* order = (Py_ssize_t*)malloc((size_t)units * sizeof(Py_ssize_t));
    if (order == NULL)
        return NULL;
    for (Py_ssize_t k = 0; k < units; k++)
        order[k] = fastbn_order_mode == 1 ? units - 1 - k : k;
    if (fastbn_order_mode == 2) {  /* Fisher-Yates on a splitmix64 stream */
        for (Py_ssize_t k = units - 1; k > 0; k--) {
            uint64_t z = (fastbn_order_seed += 0x9e3779b97f4a7c15ULL);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
            z ^= z >> 31;
            Py_ssize_t j = (Py_ssize_t)(z % (uint64_t)(k + 1)), t = order[k];
            order[k] = order[j];
            order[j] = t;
        }
    }
    return order;
}

static void fastbn_parallel_for(Py_ssize_t units, int nthreads, fastbn_unit_fn fn, void* ctx) {
    int n = nthreads < FASTBN_MAX_TEAM ? nthreads : FASTBN_MAX_TEAM;
    int expected = 0;
    if (units < n)
        n = (int)units;
    if (units <= 0)
        return;
    if (n <= 1 || !__atomic_compare_exchange_n(&fastbn_pool.lock, &expected, 1, 0,
                                               __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        fn(ctx, 0, units, 0);
        return;
    }
    if (fastbn_pool.workers < n - 1)
        fastbn_start_workers(n - 1);
    if (n > fastbn_pool.workers + 1)
        n = fastbn_pool.workers + 1;
    fastbn_pool.team = n;
    __atomic_store_n(&fastbn_pool.caller_cpu, fastbn_cpu(), __ATOMIC_RELAXED);
    fastbn_pool.fn = fn;
    fastbn_pool.ctx = ctx;
    fastbn_pool.order = fastbn_make_order(units);
    for (int s = 0; s < n; s++) {
        fastbn_pool.ranges[s].next = units * s / n;
        fastbn_pool.ranges[s].end = units * (s + 1) / n;
    }
    int64_t start = fastbn_now_ns();
    __atomic_store_n(&fastbn_pool.posted_at, start, __ATOMIC_RELAXED);
    for (int w = 0; w < n - 1; w++) {
        fastbn_mailbox* m = &fastbn_pool.mail[w];
        fastbn_store(&m->state, FASTBN_POSTED);
        int sleeping = fastbn_load(&m->sleeping);
        /* a worker asleep because its core was wanted is left to sleep a while:
           it would come late, or take the caller's core */
        if (sleeping == FASTBN_IDLE_SLEEP ||
            (sleeping == FASTBN_CONTENDED_SLEEP &&
             fastbn_now_ns() - __atomic_load_n(&m->asleep_at, __ATOMIC_RELAXED) >
                 __atomic_load_n(&m->backoff, __ATOMIC_RELAXED)))
            fastbn_wake(&m->state);
    }
    fastbn_run_units(0);
    fastbn_stats.loops++;
    for (int w = 0; w < n - 1; w++) {
        fastbn_mailbox* m = &fastbn_pool.mail[w];
        int posted = FASTBN_POSTED;
        fastbn_stats.invited++;
        if (__atomic_compare_exchange_n(&m->state, &posted, FASTBN_IDLE, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST)) {
            fastbn_stats.withdrawn++;
            continue;  /* withdrawn: that worker never touched this loop */
        }
        if (posted == FASTBN_IDLE)
            continue;
        int64_t t0 = fastbn_now_ns();
        fastbn_stats.waits++;
        if (fastbn_spin(&m->state, FASTBN_RUNNING, FASTBN_WAIT_SPIN_NS, NULL, NULL) <= 0) {
            fastbn_stats.sleeps++;
            fastbn_store(&m->waiting, 1);
            while (fastbn_load(&m->state) == FASTBN_RUNNING)
                fastbn_wait(&m->state, FASTBN_RUNNING);
            fastbn_store(&m->waiting, 0);
        }
        int64_t waited = fastbn_now_ns() - t0;
        fastbn_stats.wait_ns += waited;
        /* longer than the loop took the caller, and FASTBN_GAP_NS at least: the
           worker was descheduled while it held units (on a quiet machine the
           wait is at most a run); it backs off when it sees `late` */
        if (waited > FASTBN_GAP_NS && waited > t0 - start)
            __atomic_store_n(&m->late, 1, __ATOMIC_RELAXED);
    }
    free((void*)fastbn_pool.order);
    fastbn_pool.order = NULL;
    __atomic_store_n(&fastbn_pool.lock, 0, __ATOMIC_RELEASE);
}

#else  /* no team: every loop on the calling thread */

static int fastbn_order_mode = 0;
static uint64_t fastbn_order_seed = 0;

static void fastbn_parallel_for(Py_ssize_t units, int nthreads, fastbn_unit_fn fn, void* ctx) {
    (void)nthreads;
    if (units > 0)
        fn(ctx, 0, units, 0);
}

#endif

#define FASTBN_STATS (6 + FASTBN_WHYS)

static void fastbn_parallel_stats(long long* out) {
#if FASTBN_TEAM
    out[0] = fastbn_stats.loops;
    out[1] = fastbn_stats.invited;
    out[2] = fastbn_stats.withdrawn;
    out[3] = fastbn_stats.waits;
    out[4] = fastbn_stats.sleeps;
    out[5] = fastbn_stats.wait_ns;
    for (int i = 0; i < FASTBN_WHYS; i++)
        out[6 + i] = __atomic_load_n(&fastbn_stats.why[i], __ATOMIC_RELAXED);
#else
    for (int i = 0; i < FASTBN_STATS; i++)
        out[i] = 0;
#endif
}

static void fastbn_parallel_set_order(int mode, uint64_t seed) {
    fastbn_order_mode = mode;
    fastbn_order_seed = seed;
}

#endif
