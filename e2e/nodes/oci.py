#!/usr/bin/env python3
"""Build OCI image-layout tars from host files, for kubelet nodes that reach no registry.

    oci.py build SPEC OUT.tar   build one image (SPEC: a JSON file, or - for stdin); OUT.tar is
                                written under a temporary name and renamed when complete
    oci.py refs SPEC            print the spec's image references, one a line
    oci.py verify TAR...        check image-layout tars: JSON, digests, sizes, diff_ids, layer

The tar is what `ctr -n k8s.io images import` takes: an OCI image layout (oci-layout, index.json,
blobs/sha256/) holding one linux/amd64 image of one uncompressed layer. index.json lists the
manifest once per reference, each annotated with io.containerd.image.name (the full reference)
and org.opencontainers.image.ref.name (its tag), so one import gives the image every name.
Output is deterministic: entries sorted, mtime 0, uid/gid 0, no user or group names.

SPEC (unknown keys are refused):

    {
      "refs":       ["registry.k8s.io/pause:3.10.2", "registry.k8s.io/pause:3.10"],
      "entrypoint": ["/pause"],            optional, as are cmd, env, workdir, user
      "cmd":        ["pause"],
      "env":        ["PATH=..."],          default: PATH=/usr/local/sbin:/usr/local/bin:
                                           /usr/sbin:/usr/bin:/sbin:/bin
      "workdir":    "/",
      "user":       "65535:65535",
      "rootfs": [                          the layer, one entry each:
        {"copy": "/usr/bin/dig"},                    a host file at the same path, or
        {"copy": "/usr/bin/dash", "to": "/bin/dash"} at another; symlinks are followed for
                                                     the content; a dynamically linked ELF
                                                     file brings the libraries `ldd` resolves
                                                     (each at its host path) and its loader
                                                     (/lib64/ld-linux-x86-64.so.2); a host
                                                     directory is copied whole (symlinks in
                                                     it kept); "mode": "0755" overrides
        {"symlink": "/bin/sh", "target": "dash"},
        {"dir": "/tmp", "mode": "1777"},             (default mode 0755)
        {"file": "/etc/group", "content": "root:x:0:\\n", "mode": "0644"},
        {"busybox": "/bin/busybox", "to": "/bin/busybox"}
                                                     the binary, and a symlink NAME -> busybox
                                                     beside it for every applet its --list
                                                     prints, unless NAME is in the image in
                                                     /bin, /sbin, /usr/bin, /usr/sbin or
                                                     /usr/local/{bin,sbin} from another entry
      ]
    }

Parent directories are added (0755) for every path. Host files keep their permission bits less
setuid/setgid/sticky. Two entries for one path must agree (same source, content or target).
"""

import hashlib
import io
import json
import os
import posixpath
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BIN_DIRS = ("/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin")
EPOCH = "1970-01-01T00:00:00Z"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_LAYER_GZIP = MT_LAYER + "+gzip"
A_NAME = "io.containerd.image.name"
A_REF = "org.opencontainers.image.ref.name"
PLATFORM = {"architecture": "amd64", "os": "linux"}
CHUNK = 1 << 20


class Error(Exception):
    pass


# ------------------------------------------------------------------------------------ ELF
def elf_info(data):
    """(is_elf, interpreter or None, dynamic) from the first bytes of a file (64-bit LE only)."""
    if len(data) < 64 or data[:4] != b"\x7fELF":
        return False, None, False
    if data[4] != 2 or data[5] != 1:
        raise Error("only 64-bit little-endian ELF files are supported")
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    interp, dynamic = None, False
    for i in range(phnum):
        off = phoff + i * phentsize
        if off + 56 > len(data):
            break
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", data, off)
        if p_type == 2:  # PT_DYNAMIC
            dynamic = True
        elif p_type == 3 and p_offset + p_filesz <= len(data):  # PT_INTERP
            interp = data[p_offset:p_offset + p_filesz].rstrip(b"\0").decode()
    return True, interp, dynamic


def read_head(path, n=16384):
    with open(path, "rb") as f:
        return f.read(n)


def shared_libraries(path):
    """The absolute paths of the libraries `ldd` resolves for a dynamic ELF file."""
    env = dict(os.environ, LC_ALL="C")
    proc = subprocess.run(["ldd", path], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise Error(f"ldd {path} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    libs = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if not line or line.startswith("linux-vdso") or "statically linked" in line:
            continue
        if "=>" in line:
            name, rest = (s.strip() for s in line.split("=>", 1))
            if rest.startswith("not found"):
                raise Error(f"{path}: library {name} not found (ldd)")
            lib = rest.split(" (", 1)[0].strip()
            if not lib:  # e.g. "libfoo.so => (0x...)": a virtual object
                continue
        else:
            lib = line.split(" (", 1)[0].strip()
        if not lib.startswith("/"):
            raise Error(f"{path}: cannot read ldd line {line!r}")
        libs.append(lib)
    return libs


# ---------------------------------------------------------------------------------- rootfs
class Node:
    __slots__ = ("kind", "mode", "src", "data", "target", "explicit")

    def __init__(self, kind, mode, src=None, data=None, target=None, explicit=True):
        self.kind, self.mode, self.src, self.data = kind, mode, src, data
        self.target, self.explicit = target, explicit


def norm(path, what):
    if not isinstance(path, str) or not path.startswith("/"):
        raise Error(f"{what}: {path!r} is not an absolute path")
    p = posixpath.normpath(path)
    if p.startswith("//"):
        p = "/" + p.lstrip("/")
    return p


def parse_mode(value, default):
    if value is None:
        return default
    if isinstance(value, str):
        return int(value, 8)
    raise Error(f"mode {value!r} must be an octal string such as \"0755\"")


class Rootfs:
    def __init__(self):
        self.nodes = {}
        self.busyboxes = []

    def _put(self, path, node):
        old = self.nodes.get(path)
        if old is None:
            self.nodes[path] = node
            return
        if old.kind == node.kind == "dir":
            if node.explicit:
                if old.explicit and old.mode != node.mode:
                    raise Error(f"{path}: directory given twice with modes {old.mode:o}, {node.mode:o}")
                self.nodes[path] = node
            return
        same = old.kind == node.kind and (
            (node.kind == "symlink" and old.target == node.target)
            or (node.kind == "file" and old.mode == node.mode and (
                (old.src is not None and node.src is not None
                 and os.path.realpath(old.src) == os.path.realpath(node.src))
                or (old.data is not None and old.data == node.data))))
        if not same:
            raise Error(f"{path}: given twice, differently ({old.kind} and {node.kind})")

    def add_dir(self, path, mode=0o755, explicit=True):
        self._put(path, Node("dir", mode, explicit=explicit))

    def add_symlink(self, path, target):
        if not target:
            raise Error(f"{path}: empty symlink target")
        self._put(path, Node("symlink", 0o777, target=target))

    def add_data(self, path, data, mode=0o644):
        self._put(path, Node("file", mode, data=data))

    def add_host_file(self, src, path, mode=None):
        """A host file (content through symlinks) and, if a dynamic ELF file, what it loads."""
        try:
            st = os.stat(src)
        except OSError as e:
            raise Error(f"cannot copy {src}: {e.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise Error(f"{src} is not a regular file")
        self._put(path, Node("file", mode if mode is not None else st.st_mode & 0o777, src=src))
        is_elf, interp, dynamic = elf_info(read_head(src))
        if not is_elf:
            return
        deps = []
        if interp:
            deps.append(interp)
        if dynamic:
            deps.extend(shared_libraries(src))
        for lib in deps:
            lib = norm(lib, src)
            if lib == path:
                continue
            if lib not in self.nodes:
                self._put(lib, Node("file", os.stat(lib).st_mode & 0o777, src=lib))

    def add_host_tree(self, src, path, mode=None):
        try:
            st = os.stat(src)
        except OSError as e:
            raise Error(f"cannot copy {src}: {e.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            self.add_host_file(src, path, mode)
            return
        self.add_dir(path, st.st_mode & 0o7777 if mode is None else mode)
        for root, dirs, files in os.walk(src):
            dirs.sort()
            rel = os.path.relpath(root, src)
            base = path if rel == "." else posixpath.join(path, rel)
            for name in dirs + sorted(files):
                host = os.path.join(root, name)
                dest = posixpath.join(base, name)
                lst = os.lstat(host)
                if stat.S_ISLNK(lst.st_mode):
                    self.add_symlink(dest, os.readlink(host))
                elif stat.S_ISDIR(lst.st_mode):
                    self.add_dir(dest, lst.st_mode & 0o7777)
                elif stat.S_ISREG(lst.st_mode):
                    self.add_host_file(host, dest)
                else:
                    raise Error(f"{host}: not a file, directory or symlink")

    def add_busybox(self, src, path):
        self.add_host_file(src, path)
        proc = subprocess.run([src, "--list"], capture_output=True, text=True)
        if proc.returncode != 0 or not proc.stdout.strip():
            raise Error(f"{src} --list failed: {proc.stderr.strip()}")
        self.busyboxes.append((path, sorted(set(proc.stdout.split()))))

    def finish(self):
        """Link the busybox applets no other entry provides, then add missing parents."""
        provided = {posixpath.basename(p) for p in self.nodes
                    if posixpath.dirname(p) in BIN_DIRS and self.nodes[p].kind != "dir"}
        for path, applets in self.busyboxes:
            d, me = posixpath.split(path)
            for name in applets:
                if name != me and name not in provided:
                    self.add_symlink(posixpath.join(d, name), me)
        for path in list(self.nodes):
            parent = posixpath.dirname(path)
            while parent != "/":
                node = self.nodes.get(parent)
                if node is None:
                    self.add_dir(parent, 0o755, explicit=False)
                elif node.kind != "dir":
                    raise Error(f"{path}: its parent {parent} is a {node.kind} in the image")
                parent = posixpath.dirname(parent)
        self.nodes.pop("/", None)

    def write_layer(self, fileobj):
        """Write the layer tar (sorted, so every parent precedes its children)."""
        with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.nodes, key=lambda p: p.split("/")):
                node = self.nodes[path]
                info = tarfile.TarInfo(path.lstrip("/"))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                info.mode = node.mode
                if node.kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif node.kind == "symlink":
                    info.type, info.linkname = tarfile.SYMTYPE, node.target
                    tar.addfile(info)
                elif node.data is not None:
                    info.size = len(node.data)
                    tar.addfile(info, io.BytesIO(node.data))
                else:
                    with open(node.src, "rb") as f:
                        info.size = os.fstat(f.fileno()).st_size
                        tar.addfile(info, f)


# ----------------------------------------------------------------------------------- build
SPEC_KEYS = {"refs", "entrypoint", "cmd", "env", "workdir", "user", "rootfs"}
ENTRY_KINDS = {"copy": {"to", "mode"}, "symlink": {"target"}, "dir": {"mode"},
               "file": {"content", "mode"}, "busybox": {"to"}}


def load_spec(arg):
    try:
        text = sys.stdin.read() if arg == "-" else open(arg).read()
        spec = json.loads(text)
    except (OSError, ValueError) as e:
        raise Error(f"spec {arg}: {e}") from None
    if not isinstance(spec, dict):
        raise Error("spec: not a JSON object")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise Error(f"spec: unknown keys {sorted(unknown)}")
    refs = spec.get("refs")
    if not refs or not isinstance(refs, list) or len(set(refs)) != len(refs):
        raise Error("spec: refs must be a non-empty list of distinct image references")
    for ref in refs:
        ref_tag(ref)
    return spec


def ref_tag(ref):
    if not isinstance(ref, str) or "@" in ref:
        raise Error(f"reference {ref!r}: want NAME:TAG")
    name, _, tag = ref.rpartition(":")
    if not name or not tag or "/" in tag:
        raise Error(f"reference {ref!r}: want NAME:TAG")
    return tag


def build_rootfs(spec):
    fs = Rootfs()
    for entry in spec.get("rootfs", []):
        kinds = [k for k in ENTRY_KINDS if k in entry]
        if len(kinds) != 1:
            raise Error(f"rootfs entry {entry}: want exactly one of {sorted(ENTRY_KINDS)}")
        kind = kinds[0]
        extra = set(entry) - {kind} - ENTRY_KINDS[kind]
        if extra:
            raise Error(f"rootfs entry {entry}: unknown keys {sorted(extra)}")
        mode = parse_mode(entry.get("mode"), None)
        if kind == "copy":
            src = entry["copy"]
            fs.add_host_tree(src, norm(entry.get("to", src), "copy"), mode)
        elif kind == "symlink":
            fs.add_symlink(norm(entry["symlink"], "symlink"), entry.get("target"))
        elif kind == "dir":
            fs.add_dir(norm(entry["dir"], "dir"), 0o755 if mode is None else mode)
        elif kind == "file":
            content = entry.get("content")
            if not isinstance(content, str):
                raise Error(f"file {entry['file']}: content must be a string")
            fs.add_data(norm(entry["file"], "file"), content.encode(), 0o644 if mode is None else mode)
        else:
            src = entry["busybox"]
            fs.add_busybox(src, norm(entry.get("to", src), "busybox"))
    fs.finish()
    return fs


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def add_blob(tar, data=None, path=None):
    """Add a blob from bytes or a file; return its descriptor's digest and size."""
    if data is not None:
        digest, size = "sha256:" + hashlib.sha256(data).hexdigest(), len(data)
    else:
        digest, size = sha256_file(path), os.path.getsize(path)
    info = tarfile.TarInfo("blobs/sha256/" + digest.split(":", 1)[1])
    info.mtime, info.mode, info.size = 0, 0o644, size
    if data is not None:
        tar.addfile(info, io.BytesIO(data))
    else:
        with open(path, "rb") as f:
            tar.addfile(info, f)
    return digest, size


def add_dir_entry(tar, name):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
    tar.addfile(info)


def build(spec_arg, out):
    spec = load_spec(spec_arg)
    fs = build_rootfs(spec)
    out_dir = os.path.dirname(os.path.abspath(out))
    os.makedirs(out_dir, exist_ok=True)
    layer_fd, layer_path = tempfile.mkstemp(prefix=".layer.", dir=out_dir)
    tmp_fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(out) + ".", dir=out_dir)
    try:
        with os.fdopen(layer_fd, "wb") as f:
            fs.write_layer(f)
        layer_digest = sha256_file(layer_path)
        cfg = {}
        for key, field in (("env", "Env"), ("entrypoint", "Entrypoint"), ("cmd", "Cmd"),
                           ("workdir", "WorkingDir"), ("user", "User")):
            if spec.get(key) is not None:
                cfg[field] = spec[key]
        env = cfg.setdefault("Env", [DEFAULT_PATH])
        if not any(e.startswith("PATH=") for e in env):
            env.insert(0, DEFAULT_PATH)
        config = dict(PLATFORM, created=EPOCH, config=cfg,
                      rootfs={"type": "layers", "diff_ids": [layer_digest]},
                      history=[{"created": EPOCH, "created_by": "e2e/nodes/oci.py"}])
        with os.fdopen(tmp_fd, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
            add_dir_entry(tar, "blobs")
            add_dir_entry(tar, "blobs/sha256")
            config_digest, config_size = add_blob(tar, canonical(config))
            l_digest, l_size = add_blob(tar, path=layer_path)
            manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST,
                        "config": {"mediaType": MT_CONFIG, "digest": config_digest, "size": config_size},
                        "layers": [{"mediaType": MT_LAYER, "digest": l_digest, "size": l_size}]}
            m_digest, m_size = add_blob(tar, canonical(manifest))
            index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [
                {"mediaType": MT_MANIFEST, "digest": m_digest, "size": m_size, "platform": PLATFORM,
                 "annotations": {A_NAME: ref, A_REF: ref_tag(ref)}} for ref in spec["refs"]]}
            for name, data in (("index.json", canonical(index)),
                               ("oci-layout", canonical({"imageLayoutVersion": "1.0.0"}))):
                info = tarfile.TarInfo(name)
                info.mtime, info.mode, info.size = 0, 0o644, len(data)
                tar.addfile(info, io.BytesIO(data))
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, out)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise
    finally:
        os.unlink(layer_path)
    print(f"[oci] {out}: {', '.join(spec['refs'])} ({len(fs.nodes)} entries, "
          f"layer {l_size / 1e6:.1f} MB)", file=sys.stderr)


# ---------------------------------------------------------------------------------- verify
def verify(path):
    problems = []

    def check(ok, msg):
        if not ok:
            problems.append(msg)
        return ok

    with tarfile.open(path, "r:") as tar:
        members = {m.name.rstrip("/"): m for m in tar.getmembers()}

        def blob(digest, size, what):
            if not check(isinstance(digest, str) and digest.startswith("sha256:")
                         and len(digest) == 71, f"{what}: bad digest {digest!r}"):
                return None
            m = members.get("blobs/sha256/" + digest[7:])
            if not check(m is not None and m.isfile(), f"{what}: blob {digest} missing"):
                return None
            check(m.size == size, f"{what}: size {size} but blob has {m.size}")
            h = hashlib.sha256()
            f = tar.extractfile(m)
            while chunk := f.read(CHUNK):
                h.update(chunk)
            check("sha256:" + h.hexdigest() == digest, f"{what}: blob content does not match {digest}")
            referenced.add(m.name)
            return m

        def load(name, what):
            try:
                return json.loads(tar.extractfile(members[name]).read())
            except (KeyError, ValueError) as e:
                check(False, f"{what}: {name} missing or not JSON ({e})")
                return None

        referenced = set()
        layout = load("oci-layout", "oci-layout")
        check(layout == {"imageLayoutVersion": "1.0.0"}, f"oci-layout: {layout}")
        index = load("index.json", "index.json") or {}
        check(index.get("schemaVersion") == 2, "index.json: schemaVersion is not 2")
        descs = index.get("manifests") or []
        check(descs, "index.json: no manifests")
        refs, layer_names = [], []
        for d in descs:
            ann = d.get("annotations") or {}
            ref = ann.get(A_NAME)
            if check(ref, f"index.json: manifest {d.get('digest')} has no {A_NAME}"):
                refs.append(ref)
                check(ann.get(A_REF) == ref.rpartition(":")[2], f"{ref}: {A_REF} is not its tag")
            check(d.get("mediaType") == MT_MANIFEST, f"{ref}: manifest mediaType {d.get('mediaType')}")
            check(d.get("platform", PLATFORM) == PLATFORM, f"{ref}: platform {d.get('platform')}")
            m = blob(d.get("digest"), d.get("size"), f"{ref} manifest")
            if m is None:
                continue
            manifest = load(m.name, f"{ref} manifest") or {}
            check(manifest.get("schemaVersion") == 2, f"{ref}: manifest schemaVersion")
            check(manifest.get("mediaType") == MT_MANIFEST, f"{ref}: manifest mediaType")
            c = manifest.get("config") or {}
            check(c.get("mediaType") == MT_CONFIG, f"{ref}: config mediaType {c.get('mediaType')}")
            cm = blob(c.get("digest"), c.get("size"), f"{ref} config")
            config = load(cm.name, f"{ref} config") if cm else None
            config = config or {}
            check(config.get("architecture") == "amd64" and config.get("os") == "linux",
                  f"{ref}: config platform {config.get('os')}/{config.get('architecture')}")
            rootfs = config.get("rootfs") or {}
            diff_ids = rootfs.get("diff_ids") or []
            layers = manifest.get("layers") or []
            check(rootfs.get("type") == "layers", f"{ref}: rootfs.type")
            check(len(diff_ids) == len(layers) > 0, f"{ref}: {len(layers)} layers, {len(diff_ids)} diff_ids")
            for i, l in enumerate(layers):
                check(l.get("mediaType") in (MT_LAYER, MT_LAYER_GZIP), f"{ref}: layer {i} mediaType")
                lm = blob(l.get("digest"), l.get("size"), f"{ref} layer {i}")
                if lm is None:
                    continue
                if l.get("mediaType") == MT_LAYER:
                    check(i < len(diff_ids) and diff_ids[i] == l.get("digest"),
                          f"{ref}: diff_id {i} is not the uncompressed layer's digest")
                if lm.name not in layer_names:
                    layer_names.append(lm.name)
                    if l.get("mediaType") == MT_LAYER:
                        check_layer(tar.extractfile(lm), config.get("config") or {}, ref, check)
        extra = {n for n, m in members.items() if m.isfile() and n.startswith("blobs/")} - referenced
        check(not extra, f"unreferenced blobs: {sorted(extra)}")
    size = os.path.getsize(path)
    if problems:
        for p in problems:
            print(f"FAIL {path}: {p}", file=sys.stderr)
        return False
    print(f"ok {path} {size / 1e6:.1f} MB {' '.join(refs)}")
    return True


def check_layer(fileobj, cfg, ref, check):
    """Entries' names and owners, parents present, entrypoint and ELF loaders resolvable."""
    entries = {}
    with tarfile.open(fileobj=fileobj, mode="r:") as layer:
        for m in layer:
            name = m.name.rstrip("/")
            check(not name.startswith("/") and ".." not in name.split("/"), f"{ref}: entry {m.name}")
            check(m.uid == 0 and m.gid == 0, f"{ref}: {name} not owned by 0:0")
            parent = posixpath.dirname(name)
            check(not parent or (parent in entries and entries[parent][0].isdir()),
                  f"{ref}: {name} comes before (or without) its parent directory")
            head = layer.extractfile(m).read(16384) if m.isfile() else b""
            entries[name] = (m, head)

    def resolve(path, depth=0):
        cur = ""
        parts = [p for p in path.split("/") if p]
        for i, part in enumerate(parts):
            cur = posixpath.join(cur, part) if cur else part
            e = entries.get(cur)
            if e is None or depth > 40:
                return None
            if e[0].issym():
                t = e[0].linkname
                t = t if t.startswith("/") else posixpath.join("/" + posixpath.dirname(cur), t)
                return resolve(posixpath.normpath(posixpath.join(t, *parts[i + 1:])), depth + 1)
        return entries.get(cur)

    argv = (cfg.get("Entrypoint") or []) + (cfg.get("Cmd") or [])
    if argv:
        prog = argv[0]
        if "/" not in prog:
            path_env = next((e[5:] for e in cfg.get("Env", []) if e.startswith("PATH=")), "")
            prog = next((posixpath.join(d, prog) for d in path_env.split(":") if d
                         and resolve(posixpath.join(d, prog))), prog)
        e = resolve(prog)
        check(e is not None and e[0].isfile() and e[0].mode & 0o111,
              f"{ref}: entrypoint {argv[0]} is not an executable file in the layer")
    for name, (m, head) in entries.items():
        if m.isfile():
            try:
                is_elf, interp, _ = elf_info(head)
            except Error:
                continue
            if is_elf and interp:
                check(resolve(interp) is not None, f"{ref}: /{name} needs {interp}, not in the layer")


# ------------------------------------------------------------------------------------- main
def main(argv):
    try:
        if len(argv) == 3 and argv[0] == "build":
            build(argv[1], argv[2])
        elif len(argv) == 2 and argv[0] == "refs":
            print("\n".join(load_spec(argv[1])["refs"]))
        elif len(argv) >= 2 and argv[0] == "verify":
            ok = True
            for path in argv[1:]:
                try:
                    ok = verify(path) and ok
                except (OSError, tarfile.TarError) as e:
                    print(f"FAIL {path}: {e}", file=sys.stderr)
                    ok = False
            return 0 if ok else 1
        else:
            print(__doc__.split("\n\n")[1], file=sys.stderr)
            return 2
    except (Error, OSError) as e:
        print(f"[oci] ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
