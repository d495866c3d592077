#!/usr/bin/python3
"""Checks that every external program the code, tests and scripts run comes from a package that
the set-up step installs.

CI runs on a machine that may hold tools a session installed by hand; a fresh machine holds only
what `scripts/install-deps.sh` installs, which is every package named in `scripts/tools.sh`.
This check finds the programs the repository runs and fails, naming the program and where it is
run, when one is neither listed there nor part of the base system (an Essential or required
Debian package) nor the Rust toolchain.

Where programs are found:
- shell (`*.sh`, `.ci/run`, Makefile recipes, and `bash -c '...'` strings inside them): every
  simple command, parsed by shfmt, including what `timeout`, `nohup`, `exec`, `xargs`, `flock`,
  `env`, `command -v` and `ip netns exec NS` run;
- Rust and Python: `Command::new("x")`, string constants, the first string of an argument list
  (`["x", ...]`, `run("x", &[...])`), and what `ip netns exec NS` runs in one. A word in those
  places that is not a program on this machine nor in the manifest is taken as plain data.

Usage: scripts/check-tools.py [--list] [--root DIR]
  --list       print every program found, with one place that runs it
  --root DIR   check another tree (its own scripts/tools.sh)
  --self-test  check small trees made on the spot: a listed tool passes, an unlisted one fails
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ["agent", "controller", "cli", "common", "tests", "scripts", "appliance", "clients", "packaging"]
SKIP_DIRS = {"target", "build", ".git", "node_modules", "__pycache__", ".venv", "venv"}

# Words that are the shell's own, not programs.
SHELL_WORDS = set(
    """
    alias bg bind break builtin caller case cd command compgen complete continue declare dirs disown
    do done echo elif else enable esac eval exec exit export false fc fg fi for function getopts hash
    help history if in jobs kill let local logout mapfile popd printf pushd pwd read readarray readonly
    return select set shift shopt source suspend test then time times trap true type typeset ulimit
    umask unalias unset until wait while [ [[ ]] ] : . { } !
    """.split()
)

# Programs that run the rest of their arguments as a command: how many words (after options) to
# skip before it.
WRAPPERS = {"nohup": 0, "exec": 0, "timeout": 1, "xargs": 0, "flock": 1, "env": 0, "setsid": 0,
            "nice": 0, "ionice": 0, "stdbuf": 0, "chroot": 1, "runuser": 0, "setpriv": 0}

# Our own programs (built by cargo) and make's variables that stand for programs.
OWN = re.compile(r"^(stratus(-[a-z0-9-]+)?|stratus-bench)$")
MAKE_VARS = {"$(CARGO)": "cargo", "$(MAKE)": "make"}
TOOLCHAIN = {"cargo", "rustc", "rustup", "rustfmt", "cargo-clippy", "cargo-fmt"}


class Use:
    def __init__(self, program, where, strong):
        self.program = program
        self.where = where
        # strong: the place can only be a program (a shell command word, Command::new); weak: a
        # string that is a program only if such a program exists.
        self.strong = strong


def read_manifest():
    """The TOOLS table of scripts/tools.sh: program -> package."""
    text = (ROOT / "scripts" / "tools.sh").read_text()
    match = re.search(r"^TOOLS='(.*?)^'", text, re.S | re.M)
    if not match:
        sys.exit("tools.sh: no TOOLS='...' table")
    first = text.count("\n", 0, match.start(1)) + 1
    tools, packages = {}, []
    for number, line in enumerate(match.group(1).splitlines(), first):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) < 2:
            sys.exit(f"tools.sh:{number}: expected 'command package [who runs it]'")
        command, package = fields[0], fields[1]
        packages.append(package)
        if command != "-":
            tools[command] = package
    return tools, packages


def source_files():
    for top in SOURCE_DIRS:
        for path in sorted((ROOT / top).rglob("*")) if (ROOT / top).is_dir() else []:
            if any(part in SKIP_DIRS for part in path.relative_to(ROOT).parts) or not path.is_file():
                continue
            yield path
    for extra in [".ci/run", "Makefile"]:
        if (ROOT / extra).is_file():
            yield ROOT / extra


def is_shell(path):
    if path.suffix == ".sh" or path.name == "run" and path.parent.name == ".ci":
        return True
    if path.suffix:
        return False
    try:
        first = path.open("rb").readline()
    except OSError:
        return False
    return first.startswith(b"#!") and (b"sh" in first.split(b"/")[-1])


# ---- shell ----------------------------------------------------------------------------------

def shfmt_json(text, where):
    out = subprocess.run(["shfmt", "--to-json", "-ln", "bash"], input=text, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{where}: shfmt cannot parse it: {out.stderr.strip()}")
    return json.loads(out.stdout)


def literal(word):
    """The word's text when it is plain text (literal or quoted literal), else None."""
    text = ""
    for part in word.get("Parts", []):
        kind = part.get("Type")
        if kind == "Lit":
            text += part.get("Value", "")
        elif kind in ("SglQuoted",):
            text += part.get("Value", "")
        elif kind == "DblQuoted":
            inner = part.get("Parts", [])
            if all(p.get("Type") == "Lit" for p in inner):
                text += "".join(p.get("Value", "") for p in inner)
            else:
                return None
        else:
            return None
    return text


def shell_uses(text, where_file, functions, line_offset=0):
    """Programs run by a shell script; `functions` gathers the functions it defines (scripts
    source each other's libraries, so the caller checks names against every script's)."""
    tree = shfmt_json(text, where_file)
    calls = []

    def walk(node):
        if isinstance(node, dict):
            kind = node.get("Type")
            if kind == "FuncDecl":
                functions.add(node["Name"]["Value"])
            if kind == "CallExpr" and node.get("Args"):
                calls.append(node["Args"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(tree)
    uses = []
    for args in calls:
        words = [literal(a) for a in args]
        line = args[0]["Pos"]["Line"] + line_offset
        uses.extend(command_words(words, f"{where_file}:{line}"))
        # bash -c 'script': the script's own commands.
        for i, w in enumerate(words[:-1]):
            if w in ("bash", "sh") and words[i + 1] == "-c" and i + 2 < len(words) and words[i + 2]:
                uses.extend(shell_uses(words[i + 2], where_file, functions, line - 1))
    return uses


def command_words(words, where):
    """The programs a simple command runs: its first word, and what wrappers in it run."""
    found = []
    i = 0
    while i < len(words):
        w = words[i]
        if w is None:
            break  # $VAR or $(...) as the command: cannot be known statically
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w):
            i += 1  # VAR=value prefix
            continue
        if "/" in w:
            break  # a path: our own scripts and binaries
        if w == "command":
            rest = words[i + 1:]
            if rest[:1] == ["-v"] and len(rest) > 1 and rest[1]:
                found.append(Use(rest[1], where, True))
            break
        if w in SHELL_WORDS and w != "exec":
            break
        if w == "exec" or w in WRAPPERS:
            if w != "exec":
                found.append(Use(w, where, True))
            j = i + 1
            while j < len(words) and words[j] and words[j].startswith("-"):
                takes_value = words[j] in ("-s", "-k", "-w", "-E", "-u", "-g", "-n", "-c") and w in (
                    "timeout", "flock", "runuser", "nice", "ionice")
                j += 2 if takes_value else 1
            i = j + WRAPPERS.get(w, 0)
            continue
        found.append(Use(w, where, True))
        if w == "ip":
            rest = words[i + 1:]
            for k in range(len(rest) - 2):
                if rest[k] == "netns" and rest[k + 1] == "exec":
                    i = i + 1 + k + 3
                    break
            else:
                break
            continue
        break
    return found


def makefile_uses(path, functions):
    """Programs run by the Makefile's recipes (lines that follow a rule, not continued
    variable definitions)."""
    uses, in_rule = [], False
    lines = path.read_text().replace("\\\n", " ").splitlines()
    for number, line in enumerate(lines, 1):
        if line.startswith("\t") and in_rule:
            recipe = line.lstrip("\t").lstrip("@-+")
            for var, program in MAKE_VARS.items():
                recipe = recipe.replace(var, program)
            recipe = re.sub(r"\$\(([A-Za-z_]+)\)", r"${\1}", recipe).replace("$$", "$")
            uses.extend(shell_uses(recipe, str(path.relative_to(ROOT)), functions, number - 1))
        elif line.strip() and not line.startswith("#"):
            in_rule = bool(re.match(r"^[^=\t]*:(?!=)", line))
    return uses


# ---- Rust and Python ------------------------------------------------------------------------

WORD = r"([a-z][a-z0-9._+-]*)"
STRONG_PATTERNS = [re.compile(r"Command::new\(\s*\"" + WORD + r"\"")]
WEAK_PATTERNS = [
    re.compile(r"(?:\bconst|\bstatic)\s+[A-Z_0-9]+\s*:\s*&(?:'static\s+)?str\s*=\s*\"" + WORD + r"\""),
    re.compile(r"(?:&?\[|vec!\[)\s*\"" + WORD + r"\"\s*,"),
    re.compile(r"\"exec\"\s*,\s*[^,\]\)]+,\s*\"" + WORD + r"\""),
    re.compile(r"\(\s*\"" + WORD + r"\"\s*,\s*(?:&\[|vec!|&vec!)"),
]


def code_uses(path):
    text = path.read_text(errors="replace")
    uses = []
    for patterns, strong in ((STRONG_PATTERNS, True), (WEAK_PATTERNS, False)):
        for pattern in patterns:
            for match in pattern.finditer(text):
                if text[max(0, match.start() - 6):match.start()].endswith("args("):
                    continue  # the arguments of a command, not a command
                line = text.count("\n", 0, match.start()) + 1
                uses.append(Use(match.group(1), f"{path.relative_to(ROOT)}:{line}", strong))
    return uses


# ---- packages -------------------------------------------------------------------------------

def package_of(program_path):
    candidates = [program_path, os.path.realpath(program_path)]
    for prefix, merged in (("/usr/bin/", "/bin/"), ("/usr/sbin/", "/sbin/"), ("/bin/", "/usr/bin/"), ("/sbin/", "/usr/sbin/")):
        for c in list(candidates):
            if c.startswith(prefix):
                candidates.append(merged + c[len(prefix):])
    for c in candidates:
        out = subprocess.run(["dpkg-query", "-S", c], capture_output=True, text=True)
        if out.returncode == 0:
            return out.stdout.split(":", 1)[0].split(",")[0].strip()
    return None


def is_base(package):
    out = subprocess.run(["dpkg-query", "-W", "-f=${Essential} ${Priority}", package], capture_output=True, text=True)
    return out.returncode == 0 and (out.stdout.startswith("yes") or out.stdout.endswith("required"))


def in_toolchain(program_path):
    real = os.path.realpath(program_path)
    return "/.cargo/" in real or "/.rustup/" in real


def check(listing=False):
    """The problems found in ROOT's tree, one line each."""
    tools, _ = read_manifest()
    uses, functions = [], set()
    for path in source_files():
        rel = path.relative_to(ROOT)
        if path == Path(__file__).resolve():
            continue
        if path.name == "Makefile":
            uses.extend(makefile_uses(path, functions))
        elif is_shell(path):
            uses.extend(shell_uses(path.read_text(), str(rel), functions))
        elif path.suffix in (".rs", ".py"):
            uses.extend(code_uses(path))
    uses = [u for u in uses if not (u.strong and u.program in functions)]

    problems, seen = [], {}
    for use in uses:
        name = use.program
        if OWN.match(name) or name in TOOLCHAIN and shutil.which(name) and in_toolchain(shutil.which(name)):
            continue
        found = shutil.which(name)
        if not use.strong and name not in tools and not found:
            continue  # a plain string, not a program
        seen.setdefault(name, use.where)
        if name in tools:
            if not found:
                problems.append(f"{name} ({use.where}): listed in scripts/tools.sh as {tools[name]}, but not installed: did install-deps.sh run?")
            continue
        if not found:
            problems.append(f"{name} ({use.where}): not installed here, and scripts/tools.sh names no package for it")
            continue
        if in_toolchain(found):
            continue
        package = package_of(found)
        if package and is_base(package):
            continue
        origin = f"package {package}" if package else f"{found}, from no Debian package"
        problems.append(f"{name} ({use.where}): comes from {origin}, which the set-up step does not install: add it to scripts/tools.sh")

    # The manifest maps each program to the package that really provides it.
    for name, package in sorted(tools.items()):
        found = shutil.which(name)
        if found and not in_toolchain(found):
            actual = package_of(found)
            if actual and actual != package:
                problems.append(f"{name}: scripts/tools.sh says package {package}, but {found} comes from {actual}")

    if listing:
        for name in sorted(seen):
            print(f"{name:28} {seen[name]}")
    return list(dict.fromkeys(problems)), len(seen)


def self_test():
    """Small trees with known answers: the check must pass the first and name each culprit of
    the others (ping is installed here by the set-up step, from a non-Essential package)."""
    import tempfile

    global ROOT
    saved, failures = ROOT, []
    cases = [
        ("listed", "ping iputils-ping\n", {"tests/a.rs": 'Command::new("ping")'}, []),
        ("unlisted in Rust", "ip iproute2\n", {"tests/a.rs": 'run("ip", &["netns", "exec", ns, "ping", "-c", "1"])'}, ["ping (tests/a.rs:1): comes from package iputils-ping"]),
        ("unlisted in shell", "", {"scripts/a.sh": "#!/bin/sh\nf() { :; }\nf\ntimeout 5 ping -c1 x | grep -q y\n"}, ["ping (scripts/a.sh:4): comes from package iputils-ping"]),
        ("in bash -c", "", {"scripts/b.sh": "bash -c 'ping -c1 x'\n"}, ["ping (scripts/b.sh:1)"]),
        ("absent", "", {"tests/b.rs": 'Command::new("no-such-program-x")'}, ["no-such-program-x (tests/b.rs:1): not installed here"]),
        ("plain data", "", {"tests/c.rs": 'let kinds = ["not-a-program-y", "z"];'}, []),
        ("wrong package", "ping openssl\n", {"tests/a.rs": 'Command::new("ping")'}, ["ping: scripts/tools.sh says package openssl"]),
    ]
    try:
        for name, manifest, files, expected in cases:
            with tempfile.TemporaryDirectory() as tree:
                ROOT = Path(tree)
                (ROOT / "scripts").mkdir()
                (ROOT / "scripts" / "tools.sh").write_text(f"TOOLS='\n{manifest}'\n")
                for rel, text in files.items():
                    (ROOT / rel).parent.mkdir(parents=True, exist_ok=True)
                    (ROOT / rel).write_text(text)
                problems, _ = check()
                missing = [e for e in expected if not any(p.startswith(e) for p in problems)]
                if missing or (not expected and problems) or len(problems) != len(expected):
                    failures.append(f"{name}: expected {expected}, got {problems}")
    finally:
        ROOT = saved
    for f in failures:
        print(f"check-tools self-test: {f}", file=sys.stderr)
    if failures:
        sys.exit(1)
    print(f"check-tools self-test: {len(cases)} cases pass")


def main():
    global ROOT
    args = sys.argv[1:]
    if "--self-test" in args:
        self_test()
        return
    if "--root" in args:
        ROOT = Path(args[args.index("--root") + 1]).resolve()
    problems, found = check(listing="--list" in args)
    if problems:
        print("check-tools: programs the repository runs that a fresh machine would lack:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        sys.exit(1)
    print(f"check-tools: {found} programs run by the code, tests and scripts, all provided by the set-up step or the base system")


if __name__ == "__main__":
    main()
