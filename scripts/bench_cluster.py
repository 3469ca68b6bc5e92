#!/usr/bin/env python3
"""Measures the cluster figures of docs/benchmarks.md (see scripts/bench-cluster)."""
import ctypes, json, os, queue, select, signal, struct, subprocess, sys, tempfile, threading, time, urllib.request

BIN, KILLS, FAILOVERS, LOSSES = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
BIN = os.path.abspath(BIN)
# Load beside (a), for issue 27's "under load" figures: FILLERS more sleepers on node 3,
# which then runs the 5 kept ones too (their replacements launch beside the fillers), and
# WRITES no-op writes per second (a report that changes nothing: one Raft entry each).
FILLERS = int(os.environ.get("BENCH_FILLERS", "0"))
WRITES = int(os.environ.get("BENCH_WRITES", "0"))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 5
TOKEN = os.urandom(12).hex()
WORK = tempfile.mkdtemp(prefix="haconiwa-bench-")
STATE = os.path.join(WORK, "state")
CG = "haconiwa-bench"
ADDRS = [f"127.0.0.{i}:7800" for i in (1, 2, 3)]
HTTP = [f"127.0.0.{i}:7780" for i in (1, 2, 3)]
ENV = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), HACONIWA_TOKEN=TOKEN, HACONIWA_STATE_DIR=STATE, HACONIWA_CGROUP_PARENT=CG)
procs = {}


def start(i):
    args = [BIN, "supervisor", "--listen", ADDRS[i - 1], "--data-dir", os.path.join(WORK, f"n{i}"),
            "--http-listen", HTTP[i - 1]]
    if i > 1 and not os.path.exists(os.path.join(WORK, f"n{i}", "node_id")):
        args += ["--join", ",".join(ADDRS[: i - 1])]
    if FILLERS and i == 3:
        args += ["--label", "filler=yes"]
    log = open(os.path.join(WORK, f"n{i}.log"), "a")
    procs[i] = subprocess.Popen(args, env=ENV, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)


def cli(*args, server=None):
    env = dict(ENV, HACONIWA_SERVER=server or ",".join(a for i, a in enumerate(ADDRS, 1) if procs.get(i)))
    r = subprocess.run([BIN, *args], env=env, capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def status(server=None):
    out = cli("cluster", "status", "--json", server=server)
    return json.loads(out) if out else None


def containers(prefix="sleeper"):
    out = cli("containers", "--json")
    return [x for x in json.loads(out) if x["name"].startswith(prefix)] if out else []


def histograms(name):
    """A histogram of each member so far: [(count, seconds)], from their /metrics."""
    out = []
    for h in HTTP:
        count = total = 0.0
        with urllib.request.urlopen(f"http://{h}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(f"{name}_count "):
                    count = float(line.split()[1])
                elif line.startswith(f"{name}_sum "):
                    total = float(line.split()[1])
        out.append((count, total))
    return out


PASSES = "haconiwa_node_agent_pass_duration_seconds"
RULES = "haconiwa_cluster_rule_evaluation_duration_seconds"


def wait(cond, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def stable():
    s = status()
    c = containers()
    ok = s and s["leader"] and not s["joint"] and all(m["state"] == "up" for m in s["members"]) and len(s["members"]) == 3
    return ok and len([x for x in c if x["state"] == "running"]) == N


def events(server):
    """A background reader of `haconiwa events --json`: (arrival time, event) pairs."""
    q = queue.Queue()
    p = subprocess.Popen([BIN, "events", "--json"], env=dict(ENV, HACONIWA_SERVER=server), stdout=subprocess.PIPE, text=True)

    def pump():
        for line in p.stdout:
            q.put((time.monotonic(), json.loads(line)))

    threading.Thread(target=pump, daemon=True).start()
    return p, q


class CgroupWatch:
    """The truth of (a) from the hosts' cgroups, not from the cluster's events: inotify on
    the pids cgroup parent of the cluster and of each node (`/sys/fs/cgroup/pids/<parent>`
    and its `node-N`, which goes with a node's last container and comes back with its
    next) sees a container's cgroup made; its `cgroup.procs` is then read every 0.2 ms
    (up to 2 s) until a process of it runs the sleeper's own command (`/proc/PID/comm` is
    `sleep`: the command has exec'd, not just the container's PID 1). `seen` gets
    (time, name) for each container seen running."""

    IN_CREATE, IN_MOVED_TO = 0x100, 0x80

    def __init__(self):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise SystemExit("inotify_init1 failed")
        self.dirs = {}
        self.known = set()
        top = f"/sys/fs/cgroup/pids/{CG}"
        self.watch(top)
        for name in os.listdir(top):
            if name.startswith("node-"):
                self.watch(os.path.join(top, name))
        self.seen = queue.Queue()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def watch(self, d):
        wd = self.libc.inotify_add_watch(self.fd, d.encode(), self.IN_CREATE | self.IN_MOVED_TO)
        if wd < 0:
            raise SystemExit(f"inotify on {d} failed (errno {ctypes.get_errno()}): a v1 pids hierarchy is needed")
        self.dirs[wd] = d
        # What was made before the watch: the containers of a node dir made just now.
        self.known.update(os.listdir(d))

    def running(self, d):
        try:
            with open(os.path.join(d, "cgroup.procs")) as f:
                pids = f.read().split()
        except OSError:
            return False
        for pid in pids:
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() == "sleep":
                        return True
            except OSError:
                pass
        return False

    def follow(self, d, name):
        for _ in range(10000):
            if self.running(d):
                self.seen.put((time.monotonic(), name))
                return
            time.sleep(0.0002)

    def run(self):
        while not self.stop.is_set():
            if not select.select([self.fd], [], [], 0.2)[0]:
                continue
            buf = os.read(self.fd, 65536)
            k = 0
            while k < len(buf):
                wd, _mask, _cookie, size = struct.unpack_from("iIII", buf, k)
                name = buf[k + 16:k + 16 + size].rstrip(b"\0").decode()
                k += 16 + size
                parent = self.dirs.get(wd)
                if parent is None:
                    continue
                d = os.path.join(parent, name)
                if name.startswith("node-"):
                    before = set(self.known)
                    self.watch(d)
                    for c in sorted(set(os.listdir(d)) - before):
                        if c.startswith("sleeper"):
                            self.follow(os.path.join(d, c), c)
                elif name.startswith("sleeper"):
                    self.follow(d, name)

    def close(self):
        self.stop.set()
        self.thread.join()
        os.close(self.fd)


def write_load(server, target, rate, stop, done):
    """`rate` no-op writes per second to `server` (reports of `target`, unchanged) until
    `stop` is set; done[0] follows the count of successful ones. The writer is a process
    of its own (`benches/scale.rs --write-load`, 8 paced tasks): a Python client took
    about a core of this 2-core machine and held this process's interpreter lock, which
    also delayed the event timestamps being measured."""
    p = subprocess.Popen(["cargo", "bench", "--locked", "-q", "--bench", "scale", "--", "--write-load",
                          str(rate), server, TOKEN, str(target["node"]), target["id"], str(target["pid"])],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def pump():
        for line in p.stdout:
            done[0] = int(line)

    def stopper():
        stop.wait()
        p.stdin.close()
        p.wait()

    threading.Thread(target=pump, daemon=True).start()
    threading.Thread(target=stopper, daemon=True).start()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def cleanup():
    for p in procs.values():
        if p:
            p.kill()
    subprocess.run([BIN, "ps"], env=ENV, capture_output=True)
    for node in os.listdir(STATE) if os.path.isdir(STATE) else []:
        env = dict(ENV, HACONIWA_STATE_DIR=os.path.join(STATE, node), HACONIWA_CGROUP_PARENT=f"{CG}/{node}")
        out = subprocess.run([BIN, "ps", "--json"], env=env, capture_output=True, text=True).stdout
        for c in json.loads(out or "[]"):
            if c["status"] == "running":
                subprocess.run([BIN, "kill", c["name"], "-s", "KILL"], env=env, capture_output=True)
    # The cluster's cgroup parent (the launcher keeps its first level once made).
    for h in os.listdir("/sys/fs/cgroup"):
        top = os.path.join("/sys/fs/cgroup", h, CG)
        for d, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
            try:
                os.rmdir(d)
            except OSError:
                pass
    if os.environ.get("BENCH_KEEP"):
        print(f"kept {WORK}", file=sys.stderr)
    else:
        subprocess.run(["rm", "-rf", WORK])


def main():
    # A sleeper that outlives the benchmark, so every exit is one we caused.
    with open(os.path.join(REPO, "examples", "sleeper.haco")) as f:
        haco = f.read().replace("`${rand(30, 60)}`", '"3600"')
    with open(os.path.join(WORK, "sleeper.haco"), "w") as f:
        f.write(haco)
    with open(os.path.join(REPO, "examples", "keep5.watch")) as f:
        watch = f.read()
    if FILLERS:
        watch = watch.replace('haconiwa.spawn("sleeper.haco");', 'haconiwa.spawn(#{ haco: "sleeper.haco", node_labels: #{ filler: "yes" } });')
        with open(os.path.join(WORK, "filler.haco"), "w") as f:
            f.write(haco.replace("sleeper-", "filler-"))
        with open(os.path.join(WORK, "fillers.watch"), "w") as f:
            f.write('haconiwa.watch(|w| {\n  w.watch("cluster", |event| {\n'
                    f'    let missing = {FILLERS} - event.cluster.count("filler");\n'
                    '    if missing > 0 { haconiwa.spawn(#{ haco: "filler.haco", count: missing, node_labels: #{ filler: "yes" } }); }\n'
                    '  });\n});\n')
    with open(os.path.join(WORK, "keep5.watch"), "w") as f:
        f.write(watch)
    subprocess.run([BIN, "create", os.path.join(WORK, "sleeper.haco")], check=True, capture_output=True)
    for i in (1, 2, 3):
        start(i)
        wait(lambda: (s := status()) and s["leader"] and len(s["members"]) >= i and not s["joint"], f"node {i}")
    assert cli("watch", "apply", os.path.join(WORK, "keep5.watch")), "watch apply failed"
    wait(stable, "5 running")
    stop_load, writes = threading.Event(), [0]
    if FILLERS:
        assert cli("watch", "apply", os.path.join(WORK, "fillers.watch")), "watch apply failed"
        wait(lambda: len([x for x in containers("filler") if x["state"] == "running"]) >= FILLERS, f"{FILLERS} fillers", timeout=600)
    if WRITES:
        target = (containers("filler") or containers())[0]
        write_load(ADDRS[status()["leader"] - 1], target, WRITES, stop_load, writes)
        # The writer is a cargo bench target: it may have to be built first.
        wait(lambda: writes[0] > 0, "the no-op writer's first writes", timeout=900)
        time.sleep(2)
    load_from, writes_from, index_from = time.monotonic(), writes[0], status()["commit_index"]

    # (a) replacement latency
    lat_a, trace_a, truth_a = [], [], []
    passes_from, rules_from = histograms(PASSES), histograms(RULES)
    ev_proc, evq = events(ADDRS[0])
    cgroups = CgroupWatch()
    for k in range(KILLS):
        c = [x for x in containers() if x["state"] == "running"]
        seen = {x["id"] for x in containers()}
        victim = c[k % len(c)]
        while not evq.empty():
            evq.get_nowait()
        while not cgroups.seen.empty():
            cgroups.seen.get_nowait()
        t0, wall0 = time.monotonic(), time.time()
        os.kill(victim["pid"], signal.SIGKILL)
        steps = {}
        while True:
            t, e = evq.get(timeout=30)
            if t < t0:
                continue
            cid = (e.get("container") or {}).get("id")
            if cid == victim["id"] and e["kind"] in ("container_exited", "container_lost"):
                steps.setdefault("exit", t)
            elif cid not in seen and e["kind"] in ("container_spawned", "container_pending"):
                steps.setdefault("placed", t)
            if e["kind"] == "container_running" and cid not in seen:
                lat_a.append(t - t0)
                steps["running"] = t
                break
        t, name = cgroups.seen.get(timeout=30)
        truth_a.append(t - t0)
        if "exit" in steps and "placed" in steps:
            trace_a.append((steps["exit"] - t0, steps["placed"] - steps["exit"], t - steps["placed"],
                            steps["running"] - t, wall0))
        wait(stable, "5 running again")
    ev_proc.kill()
    cgroups.close()
    stop_load.set()
    if KILLS:
        for what, name, since in (("agent passes", PASSES, passes_from), ("rule evaluations", RULES, rules_from)):
            each = [(n1 - n0, s1 - s0) for (n0, s0), (n1, s1) in zip(since, histograms(name))]
            print(f"(a) {what} a kill, and their mean: " + ", ".join(
                f"node {i} {n / KILLS:.1f} × {1000 * t / max(n, 1):.2f} ms" for i, (n, t) in enumerate(each, 1)))
    secs = time.monotonic() - load_from
    achieved = (writes[0] - writes_from) / secs
    entries = (status()["commit_index"] - index_from) / secs
    if WRITES and achieved < 0.9 * WRITES:
        raise SystemExit(f"the load was not there: {achieved:.0f} no-op writes/s of the {WRITES} asked")
    if WRITES or FILLERS:
        print(f"(a) beside {FILLERS} fillers on node 3 and {achieved:.0f} no-op writes/s (asked {WRITES}; "
              f"{entries:.0f} Raft entries/s committed, batches included)")

    # (b) failover: kill -9 the leader, first rule evaluation committed by the new one
    lat_b = []
    def leader_and_follower():
        # The leader as the cluster says now (the restart of the last one killed may
        # have moved it since the cluster was whole), and a follower that answers and
        # agrees on it: the follower serves the event stream.
        s = status()
        leader = s and s["leader"]
        return leader and next(((leader, i) for i in (1, 2, 3) if i != leader
                                and (f := status(server=ADDRS[i - 1])) and f["leader"] == leader), None)

    for _ in range(FAILOVERS):
        leader, follower = wait(leader_and_follower, "a follower that answers")
        ev_proc, evq = events(ADDRS[follower - 1])
        time.sleep(0.3)
        if ev_proc.poll() is not None:
            raise SystemExit("the event stream did not start")
        t0 = time.monotonic()
        procs[leader].kill()
        procs[leader].wait()
        procs[leader] = None
        while True:
            t, e = evq.get(timeout=30)
            if os.environ.get("BENCH_DEBUG"):
                print(f"  {t - t0:.3f} {e['kind']} {e['index']}", file=sys.stderr)
            if t >= t0 and e["kind"] in ("rule_evaluated", "rule_failed"):
                lat_b.append(t - t0)
                break
        ev_proc.kill()
        start(leader)
        wait(stable, "the cluster whole again")

    # (c) node loss: a host with containers disappears (supervisor and containers)
    lat_c = []
    for k in range(LOSSES):
        s = status()
        c = [x for x in containers() if x["state"] == "running"]
        nodes = sorted({x["node"] for x in c if x["node"] != s["leader"]})
        node = nodes[k % len(nodes)]
        env = dict(ENV, HACONIWA_STATE_DIR=os.path.join(STATE, f"node-{node}"))
        local = json.loads(subprocess.run([BIN, "ps", "--json"], env=env, capture_output=True, text=True).stdout or "[]")
        t0 = time.monotonic()
        procs[node].kill()
        procs[node].wait()
        procs[node] = None
        for x in local:
            if x["status"] == "running":
                for pid in (x["monitor_pid"], x["pid"]):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        wait(lambda: len([x for x in containers() if x["state"] == "running" and x["node"] != node]) == N, "replacements")
        lat_c.append(time.monotonic() - t0)
        start(node)
        wait(stable, "the cluster whole again")

    ms = lambda x: f"{x * 1000:.0f}"
    if trace_a:
        # Where (a)'s time goes, from the committed events' arrival on node 1's stream.
        for k, step in enumerate(("kill → exit committed", "exit → replacement placed (rule, placement commit)",
                                  "placed → its command runs in its cgroup (agent, launch)",
                                  "its command runs → running committed (report, commit)")):
            xs = [t[k] for t in trace_a]
            print(f"(a) {step}: p50 {ms(pct(xs, 50))}, p99 {ms(pct(xs, 99))}, max {ms(max(xs))} ms")
        # The slowest, with the wall-clock time of the kill (UTC), to find in the members' logs.
        for t in sorted(trace_a, key=lambda t: -sum(t[:3]))[:3]:
            at = time.strftime("%H:%M:%S", time.gmtime(t[4])) + f".{int(t[4] * 1000) % 1000:03d}"
            print(f"(a) a slowest kill, at {at} UTC: " + " + ".join(ms(x) for x in t[:3]) + " ms to its command")
    rows = [
        ("(a) container killed → replacement's command in its cgroup (the host's truth)", truth_a,
         "p99 ≤ 25 ms idle, ≤ 50 ms under load"),
        ("(a) container killed → replacement running (its event)", lat_a, "p99 ≤ 25 ms idle, ≤ 50 ms under load"),
        ("(b) leader kill -9 → first rule evaluation by the new leader", lat_b, "p99 ≤ 500 ms"),
        ("(c) node lost → all its containers running elsewhere", lat_c, "≤ 3 s"),
    ]
    out = ["| figure | runs | p50 (ms) | p99 (ms) | max (ms) | target |", "|---|---|---|---|---|---|"]
    for name, xs, target in rows:
        if not xs:
            continue
        out.append(f"| {name} | {len(xs)} | {ms(pct(xs, 50))} | {ms(pct(xs, 99))} | {ms(max(xs))} | {target} |")
    text = "\n".join(out)
    print(text)
    os.makedirs(os.path.join(REPO, "target", "bench"), exist_ok=True)
    with open(os.path.join(REPO, "target", "bench", "cluster.md"), "w") as f:
        f.write(text + "\n")


try:
    main()
finally:
    cleanup()
