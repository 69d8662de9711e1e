#!/usr/bin/env python3
"""Checks scripts/deploy/ without a container engine or a cluster; run by check.sh.

    check.py ROOT VEIL_BIN

What it checks, and against what (never against a list kept here when the repository has
the answer):
  yaml        every *.yaml under scripts/deploy parses, without duplicate keys;
  k8s         every object has apiVersion, kind and metadata.name; kustomization.yaml lists
              every manifest but the *.example.yaml ones; namespaces, ConfigMaps, Services,
              StatefulSet services and NATS hosts that the manifests name exist among them;
              every Secret they need is named in scripts/deploy/README.md;
  veil args   every `veil` command line in a container (command, args, exec probes, `sh -c`
              scripts) uses only subcommands and flags that `VEIL_BIN <subcommand> --help`
              lists, gives the flags its usage line requires, expands only variables the
              container defines, and keeps its paths on mounted volumes;
  privileges  `veil up` runs as root with CAP_NET_ADMIN, not privileged, with the host's
              /dev/net/tun; `veil relay` runs as non-root on ports above 1024; pods in a
              namespace that enforces Pod Security "restricted" meet its rules;
  config      keys of veil.toml files in ConfigMaps are keys of docs/config.md;
  Dockerfile  multi-stage; the builder installs exactly BUILD_PACKAGES of scripts/setup.sh
              and builds like scripts/test.sh; the runtime installs exactly the packages of
              the programs core/ runs (Command::new), plus ca-certificates; hadolint-like
              rules (tags, no ADD of URLs, apt hygiene, non-root USER, exec-form ENTRYPOINT);
  .dockerignore  keeps the workspace (every member, Cargo.toml, Cargo.lock, .cargo, files
              the sources include_str!) and leaves out target/.
Prints one line per problem and exits 1 if there is any.
"""

import glob
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib

import yaml

ROOT, VEIL_BIN = sys.argv[1], sys.argv[2]
DEPLOY = os.path.join(ROOT, "scripts", "deploy")
K8S = os.path.join(DEPLOY, "k8s")
problems = []


def problem(where, msg):
    problems.append(f"{where}: {msg}")


def rel(path):
    return os.path.relpath(path, ROOT)


# --- YAML -----------------------------------------------------------------------------------
class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (Kubernetes would silently keep the last)."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)

docs = {}  # file -> list of objects
for path in sorted(glob.glob(os.path.join(DEPLOY, "**", "*.y*ml"), recursive=True)):
    try:
        with open(path) as f:
            docs[path] = [d for d in yaml.load_all(f, Loader=StrictLoader) if d is not None]
    except yaml.YAMLError as e:
        problem(rel(path), f"does not parse: {e}")
if not docs:
    problem(rel(DEPLOY), "no YAML files found")

# --- Kubernetes objects ---------------------------------------------------------------------
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Pod"}
kustomization = os.path.join(K8S, "kustomization.yaml")
included = []
if kustomization in docs:
    k = docs[kustomization][0] if docs[kustomization] else {}
    if not str(k.get("apiVersion", "")).startswith("kustomize.config.k8s.io/") or k.get(
        "kind"
    ) != "Kustomization":
        problem(rel(kustomization), "needs apiVersion kustomize.config.k8s.io/… and kind Kustomization")
    for r in k.get("resources") or []:
        p = os.path.normpath(os.path.join(K8S, r))
        if not os.path.isfile(p):
            problem(rel(kustomization), f"resource {r} does not exist")
        included.append(p)
    for p in sorted(glob.glob(os.path.join(K8S, "*.y*ml"))):
        if p != kustomization and ".example." not in os.path.basename(p) and p not in included:
            problem(rel(kustomization), f"does not list {os.path.basename(p)} (list it, or name it *.example.yaml)")
else:
    problem(rel(K8S), "has no kustomization.yaml")

objects = []  # (file, obj) of every Kubernetes object
for path, objs in docs.items():
    if not path.startswith(K8S + os.sep) or path == kustomization:
        continue
    for i, o in enumerate(objs):
        where = f"{rel(path)} (document {i + 1})"
        if not isinstance(o, dict):
            problem(where, "is not a mapping")
            continue
        missing = [f for f in ("apiVersion", "kind") if not o.get(f)]
        if not (o.get("metadata") or {}).get("name"):
            missing.append("metadata.name")
        if missing:
            problem(where, f"lacks {', '.join(missing)}")
            continue
        objects.append((path, o))


def ident(o):
    return f"{o['kind']}/{o['metadata']['name']}"


def ns(o):
    return (o.get("metadata") or {}).get("namespace")


def find(kind, name, namespace):
    return [o for _, o in objects if o["kind"] == kind and o["metadata"]["name"] == name and ns(o) == namespace]


seen = {}
for path, o in objects:
    key = (o["kind"], ns(o), o["metadata"]["name"])
    if key in seen and seen[key] != path:
        problem(rel(path), f"{ident(o)} is also defined in {rel(seen[key])}")
    seen[key] = path
    if path in included and o["kind"] not in CLUSTER_SCOPED:
        if not ns(o):
            problem(rel(path), f"{ident(o)} has no metadata.namespace (kustomization.yaml sets none)")
        elif not find("Namespace", ns(o), None):
            problem(rel(path), f"{ident(o)} is in namespace {ns(o)}, which no manifest creates")


def pod_spec(o):
    if o["kind"] == "Pod":
        return o.get("spec") or {}
    if o["kind"] in WORKLOADS:
        return (((o.get("spec") or {}).get("template") or {}).get("spec")) or {}
    return None


def pod_labels(o):
    if o["kind"] == "Pod":
        return (o.get("metadata") or {}).get("labels") or {}
    return (((o.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}


secrets_needed = set()
for path, o in objects:
    where = f"{rel(path)}: {ident(o)}"
    spec = pod_spec(o)
    if spec is not None:
        for v in spec.get("volumes") or []:
            if "configMap" in v and not find("ConfigMap", v["configMap"].get("name"), ns(o)):
                problem(where, f"volume {v.get('name')} uses ConfigMap {v['configMap'].get('name')}, which no manifest defines")
            if "secret" in v:
                secrets_needed.add(v["secret"].get("secretName"))
        for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
                if ref:
                    cms = find("ConfigMap", ref.get("name"), ns(o))
                    if not cms or ref.get("key") not in (cms[0].get("data") or {}):
                        problem(where, f"env {e.get('name')} reads key {ref.get('key')} of ConfigMap {ref.get('name')}, which no manifest defines")
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    secrets_needed.add(ref.get("name"))
    if o["kind"] == "StatefulSet":
        svc = find("Service", (o.get("spec") or {}).get("serviceName"), ns(o))
        if not svc or (svc[0].get("spec") or {}).get("clusterIP") != "None":
            problem(where, f"serviceName {(o.get('spec') or {}).get('serviceName')} is not a headless Service of its namespace")
    if o["kind"] == "Service":
        sel = (o.get("spec") or {}).get("selector") or {}
        pod_name = sel.get("statefulset.kubernetes.io/pod-name")
        if pod_name:
            m = re.fullmatch(r"(.+)-(\d+)", pod_name)
            sts = find("StatefulSet", m.group(1), ns(o)) if m else []
            if not sts or int(m.group(2)) >= (sts[0].get("spec") or {}).get("replicas", 1):
                problem(where, f"selects pod {pod_name}, which no StatefulSet makes")
        elif sel and not any(
            ns(w) == ns(o) and all(pod_labels(w).get(k) == v for k, v in sel.items())
            for _, w in objects
            if w["kind"] in WORKLOADS
        ):
            problem(where, f"selector {sel} matches no workload's pods")
    if o["kind"] == "ConfigMap":
        # Hosts such as nats://veil-nats-2.veil-nats:4222 must be pods of a StatefulSet.
        for text in (o.get("data") or {}).values():
            for host, n, svc in re.findall(r"//(([a-z0-9-]+)-\d+)\.([a-z0-9-]+)[.:]", text):
                sts = [s for _, s in objects if s["kind"] == "StatefulSet" and (s.get("spec") or {}).get("serviceName") == svc]
                idx = int(host.rsplit("-", 1)[1])
                if not any(s["metadata"]["name"] == n and idx < (s.get("spec") or {}).get("replicas", 1) for s in sts):
                    problem(where, f"names host {host}.{svc}, which no StatefulSet of Service {svc} makes")

readme = os.path.join(DEPLOY, "README.md")
readme_text = open(readme).read() if os.path.isfile(readme) else ""
if not readme_text:
    problem(rel(readme), "is missing")
for s in sorted(x for x in secrets_needed if x):
    if s not in readme_text:
        problem(rel(readme), f"does not say how to create Secret {s}, which the manifests mount")

# --- veil command lines, against the binary's own help --------------------------------------
help_cache = {}


def veil_help(path):
    """Options, required flags, env names and subcommands of `veil PATH --help`."""
    key = tuple(path)
    if key in help_cache:
        return help_cache[key]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
    env["NO_COLOR"] = "1"
    out = subprocess.run([VEIL_BIN, *path, "--help"], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        help_cache[key] = None
        return None
    longs, shorts, envs, subs, required = {}, {}, {}, set(), set()
    section, current, positionals = None, None, False
    for line in out.stdout.splitlines():
        if re.match(r"^\S.*:$", line):
            section = line[:-1]
            continue
        if line.startswith("Usage:") and not required:
            usage = re.sub(r"\[[^\]]*\]", "", line)
            required = set(re.findall(r"--([\w-]+)", usage))
        if section == "Commands":
            m = re.match(r"^ {2}(\S+)", line)
            if m:
                subs.add(m.group(1))
        if section == "Arguments" and line.startswith("  "):
            positionals = True
        if section == "Options":
            m = re.match(r"^ {2,6}(?:-(\w), )?--([\w-]+)", line)
            if m:
                current = m.group(2)
                rest = line[m.end():]
                # `--flag <V>`: takes a value; `--flag [<V>]`: may; `--flag`: does not.
                longs[current] = "opt" if re.match(r"[ =]\[<", rest) else "req" if re.match(r"[ =]<", rest) else "none"
                if m.group(1):
                    shorts[m.group(1)] = current
            e = re.search(r"\[env: (\w+)", line)
            if e and current:
                envs[current] = e.group(1)
    help_cache[key] = (longs, shorts, envs, subs, required, positionals)
    return help_cache[key]


def split_commands(argv):
    """The `veil …` command lines in an exec argv (itself, or inside `sh -c SCRIPT`)."""
    if not argv:
        return []
    if os.path.basename(argv[0]) in ("sh", "bash") and "-c" in argv:
        script = argv[argv.index("-c") + 1]
        words, cmds, cur = shlex.split(script, posix=True), [], []
        for w in words + [";"]:
            if w in (";", "|", "&&", "||"):
                if cur:
                    cmds.append(cur)
                cur = []
            else:
                cur.append(w)
        cmds = [c[1:] if c[0] == "exec" and len(c) > 1 else c for c in cmds]
        return [c for c in cmds if os.path.basename(c[0]) == "veil"]
    return [argv] if os.path.basename(argv[0]) == "veil" else []


def under_mount(path, mounts):
    path = path.split("$(")[0]
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)


def port_of(hostport):
    m = re.search(r":(\d+)$", hostport or "")
    return int(m.group(1)) if m else None


def check_veil(where, argv, c, container_env, expand):
    """Checks one `veil …` argv; returns (subcommand path, {flag: value})."""
    path, i = [], 1
    top = veil_help([])
    if top is None:
        problem(where, f"`{VEIL_BIN} --help` failed")
        return path, {}
    subs = top[3]
    while i < len(argv) and not argv[i].startswith("-") and argv[i] in subs:
        path.append(argv[i])
        h = veil_help(path)
        subs = h[3] if h else set()
        i += 1
    if not path:
        problem(where, f"`{' '.join(argv[:2])}`: no such veil subcommand ({VEIL_BIN} --help)")
        return path, {}
    longs, shorts, envs, _, required, positionals = veil_help(path)
    cmd = f"veil {' '.join(path)}"
    flags, j = {}, i
    while j < len(argv):
        tok = argv[j]
        name, eq, value = None, "", ""
        if tok.startswith("--"):
            name, eq, value = tok[2:].partition("=")
            if name not in longs:
                problem(where, f"`{cmd}` has no flag --{name} "
                        f"(`{rel(VEIL_BIN) if VEIL_BIN.startswith(ROOT) else VEIL_BIN} {' '.join(path)} --help` lists "
                        f"{', '.join('--' + f for f in sorted(longs))}); if a change in progress adds it, "
                        "this passes once it is built")
        elif re.fullmatch(r"-\w", tok):
            name = shorts.get(tok[1])
            if name is None:
                problem(where, f"`{cmd}` has no flag {tok}")
        elif not positionals:
            problem(where, f"`{cmd}` takes no argument `{tok}` (no such subcommand either)")
        if name in longs:
            takes = longs[name]
            if eq and takes == "none":
                problem(where, f"`{cmd}` flag --{name} takes no value")
            if not eq and takes != "none" and j + 1 < len(argv):
                if takes == "req" or not argv[j + 1].startswith("-"):
                    j += 1
                    value = argv[j]
            elif not eq and takes == "req":
                problem(where, f"`{cmd}` flag --{name} needs a value")
        if name:
            flags[name] = value
        j += 1
    env_names = {e.get("name") for e in container_env}
    for r in sorted(required - set(flags)):
        if envs.get(r) not in env_names:
            problem(where, f"`{cmd}` requires --{r}")
    for var in re.findall(r"\$\((\w+)\)", " ".join(argv)):
        if not expand:
            problem(where, f"$({var}) is not expanded here (only in command and args)")
        elif var not in env_names:
            problem(where, f"$({var}) is not an env variable of the container, so Kubernetes leaves it as is")
    mounts = [m.get("mountPath", "") for m in c.get("volumeMounts") or []]
    for f in ("state-dir", "token-file", "config", "cert"):
        if flags.get(f) and not under_mount(flags[f], mounts):
            problem(where, f"--{f} {flags[f]} is on no volume mount")
    return path, flags


def image_default_user():
    df = os.path.join(DEPLOY, "Dockerfile")
    users = re.findall(r"^USER\s+(\S+)", open(df).read(), re.M) if os.path.isfile(df) else []
    return users[-1].split(":")[0] if users else "0"


veil_runs = 0
for path, o in objects:
    spec = pod_spec(o)
    if spec is None:
        continue
    psc = spec.get("securityContext") or {}
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        image = str(c.get("image", ""))
        if image.rsplit("/", 1)[-1].split(":")[0].split("@")[0] != "veil":
            continue
        where = f"{rel(path)}: {ident(o)} container {c.get('name')}"
        # No command: the image's ENTRYPOINT, veil (the Dockerfile check holds it to that).
        argv = [str(a) for a in (c.get("command") or ["veil"]) + (c.get("args") or [])]
        runs = [(sub, True) for sub in split_commands(argv)]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            cmd = ((c.get(probe) or {}).get("exec") or {}).get("command")
            for sub in split_commands([str(x) for x in cmd or []]):
                runs.append((sub, False))
        for argv_, expand in runs:
            veil_runs += 1
            sub, flags = check_veil(where, argv_, c, c.get("env") or [], expand)
            if not expand:
                continue
            sc = c.get("securityContext") or {}
            user = str(sc.get("runAsUser", psc.get("runAsUser", image_default_user())))
            if sub == ["up"]:
                caps = set((sc.get("capabilities") or {}).get("add") or [])
                if sc.get("privileged"):
                    problem(where, "`veil up` needs CAP_NET_ADMIN, not privileged: true")
                if "NET_ADMIN" not in caps:
                    problem(where, "`veil up` needs capabilities.add NET_ADMIN")
                if user not in ("0", "root"):
                    problem(where, f"`veil up` runs as user {user}: added capabilities reach only root (runAsUser: 0)")
                tun = [m for m in c.get("volumeMounts") or [] if m.get("mountPath") == "/dev/net/tun"]
                hp = (volumes.get(tun[0].get("name")) or {}).get("hostPath") if tun else None
                if not hp or hp.get("path") != "/dev/net/tun" or hp.get("type") != "CharDevice":
                    problem(where, "`veil up` needs /dev/net/tun mounted from a hostPath of type CharDevice")
            if sub == ["relay"]:
                if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) and user not in ("0", "root")):
                    problem(where, "`veil relay` needs no privileges: run it with runAsNonRoot and a non-root user")
                if (sc.get("capabilities") or {}).get("add"):
                    problem(where, "`veil relay` needs no added capabilities")
                for f in ("listen", "tcp-listen", "advertise"):
                    p = port_of(flags.get(f))
                    if f == "tcp-listen" and flags.get(f) != "off" and p is None:
                        problem(where, "give --tcp-listen HOST:PORT above 1024 or off: the default, 443, needs root")
                    elif f != "advertise" and p is not None and p <= 1024:
                        problem(where, f"--{f} port {p} needs root; use a port above 1024")
                declared = {(p.get("containerPort"), p.get("protocol", "TCP")) for p in c.get("ports") or []}
                if port_of(flags.get("listen")) and (port_of(flags["listen"]), "UDP") not in declared:
                    problem(where, f"declares no UDP containerPort {port_of(flags['listen'])} for --listen")
                if flags.get("advertise") and port_of(flags["advertise"]) != port_of(flags.get("listen")):
                    problem(where, f"--advertise {flags['advertise']} is not the --listen port: other relays "
                            "send to the advertised address, which here is the pod's own")
if veil_runs == 0:
    problem(rel(K8S), "no container runs veil (image veil)")

# --- Pod Security "restricted", where a namespace enforces it -------------------------------
restricted = {
    o["metadata"]["name"]
    for _, o in objects
    if o["kind"] == "Namespace"
    and ((o["metadata"].get("labels") or {}).get("pod-security.kubernetes.io/enforce") == "restricted")
}
for path, o in objects:
    spec = pod_spec(o)
    if spec is None or ns(o) not in restricted:
        continue
    where = f"{rel(path)}: {ident(o)} (namespace {ns(o)} enforces Pod Security restricted)"
    psc = spec.get("securityContext") or {}
    for f in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(f):
            problem(where, f"{f} is not allowed")
    for v in spec.get("volumes") or []:
        if "hostPath" in v:
            problem(where, f"hostPath volume {v.get('name')} is not allowed")
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        sc = c.get("securityContext") or {}
        name = f"container {c.get('name')}"
        if sc.get("privileged"):
            problem(where, f"{name}: privileged is not allowed")
        if sc.get("allowPrivilegeEscalation") is not False:
            problem(where, f"{name}: needs allowPrivilegeEscalation: false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problem(where, f"{name}: needs capabilities.drop [ALL]")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problem(where, f"{name}: may add only NET_BIND_SERVICE")
        if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")) or sc.get("runAsUser", psc.get("runAsUser")) == 0:
            problem(where, f"{name}: needs runAsNonRoot: true and a non-zero runAsUser")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problem(where, f"{name}: needs seccompProfile RuntimeDefault")

# --- veil.toml in ConfigMaps, against docs/config.md ----------------------------------------
config_md = open(os.path.join(ROOT, "docs", "config.md")).read()
config_keys = set(re.findall(r"^\| `([a-z0-9_]+)` \|", config_md, re.M))
for path, o in objects:
    if o["kind"] != "ConfigMap":
        continue
    for name, text in (o.get("data") or {}).items():
        if not name.endswith(".toml"):
            continue
        where = f"{rel(path)}: {ident(o)} {name}"
        try:
            keys = set(tomllib.loads(text))
        except tomllib.TOMLDecodeError as e:
            problem(where, f"does not parse as TOML: {e}")
            continue
        keys |= set(re.findall(r"^\s*#\s*([a-z0-9_]+)\s*=", text, re.M))  # suggestions too
        for key in sorted(keys - config_keys):
            problem(where, f"key {key} is not in docs/config.md")

# --- Dockerfile ---------------------------------------------------------------------------
def setup_array(name):
    """An array of scripts/setup.sh, evaluated by bash (APT_PACKAGES includes BUILD_PACKAGES)."""
    blocks = "".join(f"/^{a}=(/,/^)/p;" for a in ("BUILD_PACKAGES", "APT_PACKAGES"))
    script = f'eval "$(sed -n "{blocks}" scripts/setup.sh)"; printf "%s\\n" "${{{name}[@]}}"'
    out = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True)
    return [x for x in out.stdout.split() if x]


def instructions(text):
    """(line number, INSTRUCTION, arguments) with continuations joined, comments dropped."""
    result, buf, start = [], "", None
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if start is None:
            start = n
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        result.append((start, word.upper(), rest.strip()))
        buf, start = "", None
    return result


def apt_installs(run):
    """Packages of the `apt-get install` commands in a RUN line."""
    pkgs = []
    for m in re.finditer(r"apt-get\s+install\s+(.*?)(?:&&|;|\||$)", run):
        words = m.group(1).split()
        for i, w in enumerate(words):
            if not w.startswith("-") and (i == 0 or words[i - 1] != "-o"):
                pkgs.append(w)
    return pkgs


DF = os.path.join(DEPLOY, "Dockerfile")
df_where = rel(DF)
build_packages = setup_array("BUILD_PACKAGES")
apt_packages = setup_array("APT_PACKAGES")
if not build_packages:
    problem("scripts/setup.sh", "defines no BUILD_PACKAGES array (what building veil needs from apt)")
if not os.path.isfile(DF):
    problem(df_where, "is missing")
    ins = []
else:
    ins = instructions(open(DF).read())
stages = []  # dicts: name, image, instructions
for n, word, rest in ins:
    if word == "FROM":
        parts = rest.split()
        image = [p for p in parts if not p.startswith("--")][0]
        name = parts[parts.index("AS") + 1] if "AS" in parts else (parts[parts.index("as") + 1] if "as" in parts else None)
        stages.append({"name": name, "image": image, "line": n, "ins": []})
    elif stages:
        stages[-1]["ins"].append((n, word, rest))
    elif word not in ("ARG",):
        problem(f"{df_where}:{n}", f"{word} before the first FROM")
if ins and len(stages) < 2:
    problem(df_where, "is not multi-stage (a builder and a small runtime stage)")

for st in stages:
    img = st["image"]
    tag = img.split("@")[0].rsplit("/", 1)[-1].partition(":")[2]
    if not tag and "@" not in img:
        problem(f"{df_where}:{st['line']}", f"FROM {img} has no tag")
    if tag == "latest":
        problem(f"{df_where}:{st['line']}", f"FROM {img}: pin a version rather than latest")
    names = [s["name"] for s in stages[: stages.index(st)]]
    counts = {}
    for n, word, rest in st["ins"]:
        where = f"{df_where}:{n}"
        counts[word] = counts.get(word, 0) + 1
        if word == "ADD":
            srcs = [w for w in shlex.split(rest) if not w.startswith("--")][:-1]
            for s in srcs:
                if re.match(r"(https?|git|ssh)://|git@", s):
                    problem(where, f"ADD of a URL ({s}): fetch it in a RUN with a checksum, or COPY it")
                elif not re.search(r"\.tar(\.\w+)?$|\.tgz$", s):
                    problem(where, f"ADD {s}: use COPY for files and directories")
        if word == "COPY":
            m = re.search(r"--from=(\S+)", rest)
            if m and m.group(1) not in names:
                problem(where, f"COPY --from={m.group(1)} names no earlier stage")
        if word == "WORKDIR" and not rest.startswith("/"):
            problem(where, f"WORKDIR {rest} is not absolute")
        if word == "RUN":
            if re.search(r"(^|\s|&&|;)sudo\s", rest):
                problem(where, "sudo in RUN: the build runs as root already")
            if "apt-get install" in rest:
                for need, why in (
                    ("apt-get update", "in the same RUN (a cached update goes stale)"),
                    ("--no-install-recommends", "(recommends bloat the image)"),
                    ("rm -rf /var/lib/apt/lists", "in the same RUN (the lists stay in the layer)"),
                ):
                    if need not in rest:
                        problem(where, f"apt-get install without {need} {why}")
                if not re.search(r"apt-get\s+install\s+(?:\S+\s+)*?-y\b", rest):
                    problem(where, "apt-get install without -y")
    for word in ("ENTRYPOINT", "CMD"):
        if counts.get(word, 0) > 1:
            problem(f"{df_where}:{st['line']}", f"stage has {counts[word]} {word}s; only the last counts")

builders = [s for s in stages if any(w == "RUN" and "cargo build" in r for _, w, r in s["ins"])]
if stages and not builders:
    problem(df_where, "no stage runs cargo build")
for st in builders:
    where = f"{df_where}:{st['line']}"
    if not st["image"].startswith("rust:"):
        problem(where, f"the builder's image {st['image']} is not an official rust image")
    m = re.match(r"rust:(\d+)\.(\d+)", st["image"])
    ws = tomllib.load(open(os.path.join(ROOT, "Cargo.toml"), "rb"))
    msrv = (ws.get("workspace", {}).get("package", {}).get("rust-version") or "0.0").split(".")
    if m and (int(m.group(1)), int(m.group(2))) < (int(msrv[0]), int(msrv[1])):
        problem(where, f"{st['image']} is older than the workspace's rust-version {'.'.join(msrv)}")
    got = [p for _, w, r in st["ins"] if w == "RUN" for p in apt_installs(r)]
    if sorted(set(got)) != sorted(set(build_packages)):
        problem(where, f"the builder installs {sorted(set(got))} but BUILD_PACKAGES of scripts/setup.sh is "
                f"{sorted(set(build_packages))}: make them the same")
    build = " ".join(r for _, w, r in st["ins"] if w == "RUN" and "cargo build" in r)
    test_sh = open(os.path.join(ROOT, "scripts", "test.sh")).read()
    test_build = re.search(r"^stage \"build[^\n]*?\d+ (cargo build[^\n]*)", test_sh, re.M)
    if not test_build:
        problem("scripts/test.sh", "has no build stage (`stage \"build …\" TIMEOUT cargo build …`) to compare with")
    else:
        for flag in ("--release", "-p veil-cli"):
            if flag in test_build.group(1) and flag not in build:
                problem(where, f"scripts/test.sh builds with `{test_build.group(1)}` but the image's cargo build lacks {flag}")
    if "target/release/veil" not in build:
        problem(where, "the builder does not take target/release/veil")

if stages:
    final = stages[-1]
    where = f"{df_where}:{final['line']}"
    if final in builders or final["image"].startswith("rust:"):
        problem(where, "the last (runtime) stage is the builder: the image would carry the toolchain")
    if not any(w == "COPY" and "--from=" in r and re.search(r"\bveil\b", r) for _, w, r in final["ins"]):
        problem(where, "the runtime stage copies no veil binary from the builder")
    users = [r.split(":")[0] for _, w, r in final["ins"] if w == "USER"]
    if not users or users[-1] in ("0", "root"):
        problem(where, "the runtime stage ends as root: add a non-root USER (nodes override it)")
    eps = [r for _, w, r in final["ins"] if w == "ENTRYPOINT"]
    try:
        ep = json.loads(eps[-1]) if eps else None
    except ValueError:
        ep = None
    if not (isinstance(ep, list) and ep and os.path.basename(ep[0]) == "veil"):
        problem(where, 'ENTRYPOINT must be the exec form ["veil"] (the manifests pass only arguments)')
    # What the code runs, and the Debian package of each; None: not in the image, on purpose.
    COMMAND_PACKAGES = {
        "ip": "iproute2",
        "nft": "nftables",
        # Optional: without systemd-resolved a node answers *.veil on its address only.
        "resolvectl": None,
        # `veil service install/uninstall` sets up a host; containers never run it.
        "systemctl": None,
        "groupadd": None,
        "usermod": None,
        "launchctl": None,
        "dseditgroup": None,
    }
    commands = {}
    for src in glob.glob(os.path.join(ROOT, "core", "*", "src", "**", "*.rs"), recursive=True):
        text = open(src).read()
        for m in re.finditer(r"Command::new\(\s*(\"([^\"]*)\")?", text):
            line = text.count("\n", 0, m.start()) + 1
            if m.group(2) is not None:
                commands.setdefault(m.group(2), f"{rel(src)}:{line}")
                continue
            # A helper such as `fn run(program: &str, …) { Command::new(program) … }`: the
            # programs are the string literals its callers in this file pass first.
            fns = re.findall(r"\bfn (\w+)\s*(?:<[^>]*>)?\(", text[: m.start()])
            called = re.findall(rf"\b{fns[-1]}\(\s*\"([^\"]+)\"", text) if fns else []
            if not called:
                problem(f"{rel(src)}:{line}", "Command::new of a non-literal that check.py cannot trace to a program name")
            for prog in called:
                commands.setdefault(prog, f"{rel(src)}:{line}")
    needed = set()
    for cmd, at in sorted(commands.items()):
        if cmd not in COMMAND_PACKAGES:
            problem(at, f"the code runs `{cmd}`: add its Debian package to the Dockerfile's runtime stage "
                    "and to COMMAND_PACKAGES in scripts/deploy/check.py")
        elif COMMAND_PACKAGES[cmd]:
            needed.add(COMMAND_PACKAGES[cmd])
    got = {p for _, w, r in final["ins"] if w == "RUN" for p in apt_installs(r)}
    want = needed | {"ca-certificates"}
    if got != want:
        problem(where, f"the runtime installs {sorted(got)}; what the code runs needs exactly {sorted(want)}")
    for p in sorted(needed - set(apt_packages)):
        problem("scripts/setup.sh", f"the image installs {p} for the code, but APT_PACKAGES lacks it (the tests would run without it)")

# --- .dockerignore --------------------------------------------------------------------------
DI = os.path.join(ROOT, ".dockerignore")
if not os.path.isfile(DI):
    problem(".dockerignore", "is missing: the build context would carry target/ (tens of GB)")
else:
    patterns = [l.strip() for l in open(DI) if l.strip() and not l.lstrip().startswith("#")]

    def to_regex(p):
        p = p.lstrip("/")
        out, i = "", 0
        while i < len(p):
            if p.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif p.startswith("**", i):
                out, i = out + ".*", i + 2
            else:
                ch = p[i]
                out += "[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch)
                i += 1
        return re.compile(out + "$")

    rules = [(p.startswith("!"), to_regex(p.lstrip("!"))) for p in patterns]

    def ignored(path):
        # As Docker does: the last pattern that matches the path or one of its parents wins.
        parts = path.split("/")
        prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
        result = False
        for negate, rx in rules:
            if any(rx.match(p) for p in prefixes):
                result = not negate
        return result

    ws = tomllib.load(open(os.path.join(ROOT, "Cargo.toml"), "rb")).get("workspace", {})
    keep = ["Cargo.toml", "Cargo.lock", ".cargo/config.toml"]
    for member in ws.get("members", []):
        for d in sorted(glob.glob(os.path.join(ROOT, member))) or [os.path.join(ROOT, member)]:
            keep.append(rel(os.path.join(d, "Cargo.toml")))
            keep.append(rel(os.path.join(d, "src")))
    # Files the sources compile in from elsewhere (include_str!, include_bytes!).
    members = [d for m in ws.get("members", []) for d in glob.glob(os.path.join(ROOT, m))]
    for d in members:
        for src in glob.glob(os.path.join(d, "**", "*.rs"), recursive=True):
            for inc in re.findall(r"include_(?:str|bytes)!\(\s*\"([^\"]+)\"", open(src).read()):
                keep.append(rel(os.path.normpath(os.path.join(os.path.dirname(src), inc))))
    for p in keep:
        if ignored(p):
            problem(".dockerignore", f"leaves out {p}, which cargo build needs")
    if not ignored("target"):
        problem(".dockerignore", "does not leave out target/")

for p in problems:
    print(f"check: FAIL {p}")
print(f"check: {len(problems)} problem(s) in {len(docs)} YAML files, {len(objects)} objects, "
      f"{veil_runs} veil command lines, {len(stages)} Dockerfile stages")
sys.exit(1 if problems else 0)
