#!/usr/bin/env python3
"""Writes umoci's man pages (man(7) roff) from the binary's own description of its commands
and flags (`umoci --experimental-dump-help`, swift-argument-parser's) and the prose in
docs/man/pages.txt.

    python3 scripts/manpages.py UMOCI_BINARY docs/man/pages.txt OUTDIR

Each page gets NAME (the command's abstract), SYNOPSIS and DESCRIPTION (the prose), OPTIONS
(every flag the command has, from the binary: names, value, help; a flag without help text in
the binary takes the prose's `@option` line), the prose's other sections, and SEE ALSO. The
prose must name every command the binary has (hidden ones included, but not `help` or the
mount server's `__serve`) and no flag it does not have: a new command or a renamed flag stops
the build until its page is written. Aliases (`umoci-rm.1`, `umoci-ls.1`, `umoci-raw-config.1`)
are symlinks to the page they name (mandoc finds `.so` fragile).

Source format: `@page NAME` starts a page; `@synopsis LINE` (plain text, repeatable),
`@option FLAG ROFF`, `@see PAGE...` and `@section TITLE` followed by roff lines, up to the next
`@` line.
"""
import json
import os
import re
import subprocess
import sys

SKIPPED = {"help", "__serve"}
# What an option's value is, for the flags whose names say little (swift-argument-parser names
# the value after the flag).
VALUE_NAMES = {
    "log": "level", "image": "image-path[:tag]", "layout": "image-path", "cache-dir": "directory",
    "uid-map": "container:host[:size]", "gid-map": "container:host[:size]", "tag": "new-tag",
    "compress": "auto|gzip|zstd|none", "mask-path": "path", "rootfs": "rootfs", "manifest": "manifest.mtree",
    "path": "directory", "add-keywords": "keywords", "use-keywords": "keywords", "clear": "field",
    "history.author": "author", "history.comment": "comment", "history.created": "time",
    "history.created_by": "command", "created": "time",
}
# Every command's --help and --version: said once, on umoci(1).
GENERIC = {"help", "version"}
DATE = "2026-12-07"


def escape(text):
    """Plain text for roff: backslashes, hyphens of option names, a leading '.' or "'"."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return re.sub(r"^([.'])", r"\\&\1", text, flags=re.M)


def commands(node, path):
    """Every command as (page name, words, node), depth first."""
    words = path + [node["commandName"]]
    yield "-".join(words), words, node
    for sub in node.get("subcommands", []):
        if sub["commandName"] not in SKIPPED:
            yield from commands(sub, words)


def parse_source(text):
    pages = {}
    page = None
    section = None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("@"):
            keyword, _, rest = line.partition(" ")
            section = None
            if keyword == "@page":
                page = pages.setdefault(rest.strip(), {"synopsis": [], "options": {}, "sections": [], "see": []})
            elif page is None:
                sys.exit(f"pages.txt:{number}: {keyword} before any @page")
            elif keyword == "@synopsis":
                page["synopsis"].append(rest.strip())
            elif keyword == "@option":
                flag, _, help_text = rest.strip().partition(" ")
                page["options"][flag] = help_text.strip()
            elif keyword == "@see":
                page["see"] += rest.split()
            elif keyword == "@section":
                section = [rest.strip(), []]
                page["sections"].append(section)
            else:
                sys.exit(f"pages.txt:{number}: unknown directive {keyword}")
        elif section is not None:
            section[1].append(line)
        elif line.strip() and not line.startswith("#"):
            sys.exit(f"pages.txt:{number}: text outside a @section")
    return pages


def option_lines(argument, prose):
    names = argument.get("names", [])
    if not names:
        return None  # a positional argument: the synopsis names it
    spelled = []
    for n in sorted(names, key=lambda n: (n["kind"] != "long", n["kind"] == "short")):
        prefix = "-" if n["kind"] in ("short", "longWithSingleDash") else "--"
        spelled.append("\\fB" + escape(prefix + n["name"]) + "\\fR")
    head = ", ".join(spelled)
    long_name = next((n["name"] for n in names if n["kind"] == "long"), names[0]["name"])
    if argument["kind"] == "option":
        head += " \\fI" + escape(VALUE_NAMES.get(long_name, "value")) + "\\fR"
    # The prose's line (roff), when there is one, says more than the one-line help (text).
    text = prose.pop(long_name, None) or escape(argument.get("abstract", "").strip())
    if not text:
        sys.exit(f"the flag --{long_name} has no help text in the binary and no @option in pages.txt")
    if argument.get("isRepeating") and "repeatable" not in text:
        text += " (repeatable)"
    default = argument.get("defaultValue")
    if default not in (None, "", "false", "-1") and argument["kind"] == "option":
        text += f" [default: {escape(default)}]"
    return head, text


def render(name, words, node, page, aliases):
    out = []
    title = name.upper()
    out.append(f'.TH {escape(title)} 1 "{DATE}" "umoci" "umoci manual"')
    out.append(".SH NAME")
    out.append(f"{escape(name)} \\- {escape(node.get('abstract', '').strip() or name)}")
    out.append(".SH SYNOPSIS")
    if not page["synopsis"]:
        sys.exit(f"{name}: no @synopsis")
    command = " ".join(words)
    for i, line in enumerate(page["synopsis"]):
        if not line.startswith(command):
            sys.exit(f"{name}: @synopsis must start with '{command}': {line}")
        if i:
            out.append(".br")
        out.append("\\fB" + escape(command) + "\\fR" + escape(line[len(command):]))
    sections = list(page["sections"])
    description = [s for s in sections if s[0] == "DESCRIPTION"]
    if not description:
        sys.exit(f"{name}: no @section DESCRIPTION")
    out.append(".SH DESCRIPTION")
    out += description[0][1]
    if aliases:
        out.append(".PP")
        out.append("Also spelled " + ", ".join("\\fB" + escape(" ".join(words[:-1] + [a])) + "\\fR" for a in aliases) + ".")
    prose_options = dict(page["options"])
    arguments = [a for a in node.get("arguments", []) if a.get("shouldDisplay", True)
                 and (name == "umoci" or not {n["name"] for n in a.get("names", [])} & GENERIC)]
    entries = [e for e in (option_lines(a, prose_options) for a in arguments) if e]
    if prose_options:
        sys.exit(f"{name}: @option for flags the command does not have: {', '.join(sorted(prose_options))}")
    if entries:
        out.append(".SH OPTIONS")
        for head, text in entries:
            out.append(".TP")
            out.append(head)
            out.append(text)
    for title, lines in sections:
        if title == "DESCRIPTION":
            continue
        out.append(".SH " + escape(title))
        out += lines
    see = page["see"] or []
    if name != "umoci" and "umoci" not in see:
        see = ["umoci"] + see
    if see:
        out.append(".SH SEE ALSO")
        refs = []
        for ref in see:
            m = re.fullmatch(r"(.+)\((\w+)\)", ref)
            page_name, section = (m.group(1), m.group(2)) if m else (ref, "1")
            refs.append(f"\\fB{escape(page_name)}\\fR({section})")
        out.append(",\n".join(refs))
    # No blank lines: in roff they are spacing requests, and mandoc -T lint flags them.
    return "\n".join(line for line in out if line.strip()) + "\n"


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: manpages.py UMOCI_BINARY PAGES.TXT OUTDIR")
    binary, source, outdir = sys.argv[1:]
    dump = json.loads(subprocess.run([binary, "--experimental-dump-help"], check=True, capture_output=True).stdout)
    with open(source, encoding="utf-8") as f:
        pages = parse_source(f.read())
    os.makedirs(outdir, exist_ok=True)
    written = set()
    for name, words, node in commands(dump["command"], []):
        if name not in pages:
            sys.exit(f"pages.txt has no @page {name} (the binary has the command '{' '.join(words)}')")
        aliases = node.get("aliases", [])
        with open(os.path.join(outdir, name + ".1"), "w", encoding="utf-8") as f:
            f.write(render(name, words, node, pages[name], aliases))
        written.add(name)
        for alias in aliases:
            alias_name = "-".join(words[:-1] + [alias])
            link = os.path.join(outdir, alias_name + ".1")
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(name + ".1", link)
    unknown = set(pages) - written
    if unknown:
        sys.exit(f"pages.txt has pages for commands the binary does not have: {', '.join(sorted(unknown))}")


if __name__ == "__main__":
    main()
