#!/bin/sh
# Runs the clang static analyzer (scan-build) over a build of the working tree and prints
# each report as text: the file and line, the kind of problem, and the path of events that
# leads there, so reports can be read and triaged without a browser.
#
#   share/scripts/static-analysis.sh [WORKDIR]
#
# The tracked and untracked-but-not-ignored files are copied to WORKDIR/src (default a new
# /tmp/tp-analysis-XXXXXX), configured there with every plugin this machine can build
# (backend-cuda where the CUDA toolkit is found) and built under scan-build. The HTML
# reports stay in WORKDIR/report, the text in WORKDIR/reports.txt.
#
# Reports judged false positives are listed, each with the reason, in
# share/scripts/static-analysis.known by the analyzer's issue hash (which follows the code
# around the report, not its line number); they are printed but do not count.
#
# Exits 0 when every report is a known false positive, 1 when there is another (or the
# build failed), 77 when scan-build is missing (Debian: apt-get install clang-tools).
set -u

command -v scan-build > /dev/null 2>&1 || {
    echo "static-analysis: scan-build not found (apt-get install clang-tools)"
    exit 77
}
top=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$(mktemp -d /tmp/tp-analysis-XXXXXX)}
mkdir -p "$work"
rm -rf "$work/src" "$work/report"
mkdir -p "$work/src"

# A copy of the working tree, so that an in-tree configured checkout is not disturbed.
(cd "$top" && git ls-files -co --exclude-standard -z | xargs -0 tar cf -) | (cd "$work/src" && tar xf -) || {
    echo "static-analysis: cannot copy the working tree from $top"
    exit 1
}
cd "$work/src" || exit 1
if ! { autoreconf -fi && ./configure; } > "$work/configure.log" 2>&1; then
    echo "static-analysis: configure failed (see $work/configure.log)"
    exit 1
fi
# Dead stores are a matter of style here (a value set for clarity before a loop), not a defect.
scan-build -o "$work/report" -disable-checker deadcode.DeadStores make -j"$(nproc)" \
    > "$work/build.log" 2>&1
build_rc=$?
if [ "$build_rc" -ne 0 ]; then
    echo "static-analysis: the build failed (see $work/build.log)"
    exit 1
fi

python3 - "$work" "$top/share/scripts/static-analysis.known" <<'EOF'
import glob, html, os, re, sys
work, known_file = sys.argv[1], sys.argv[2]
src = os.path.join(work, "src") + "/"
known = set()
for entry in open(known_file):
    entry = entry.split("#", 1)[0].split()
    if entry:
        known.add(entry[0])
reports, new = [], 0
for f in sorted(glob.glob(os.path.join(work, "report", "*", "report-*.html"))):
    text = open(f, errors="replace").read()
    field = lambda key: re.search(r"<!-- %s (.*?) -->" % key, text).group(1)
    path = os.path.normpath(field("BUGFILE")).replace(src, "")
    digest = field("ISSUEHASHCONTENTOFLINEINCONTEXT")
    verdict = "known false positive" if digest in known else "NEW"
    new += digest not in known
    lines = ["%s:%s: %s: %s [%s %s, in %s()]" % (path, field("BUGLINE"), field("BUGTYPE"),
                                              field("BUGDESC"), verdict, digest,
                                              field("FUNCTIONNAME"))]
    line = "?"
    # Source rows carry id="LN<n>"; the path's events follow the row they belong to.
    for m in re.finditer(r'id="LN(\d+)"|<div id="(?:End)?Path\d*" class="msg[^"]*"(.*?)</table>',
                         text, re.S):
        if m.group(1):
            line = m.group(1)
            continue
        for cell in re.findall(r"<td>(.*?)</td>", m.group(2), re.S):
            event = html.unescape(re.sub("<[^>]+>", "", cell)).strip()
            if event and event not in ("\u2190", "\u2192"):
                lines.append("    line %s: %s" % (line, event))
    reports.append("\n".join(lines))
out = os.path.join(work, "reports.txt")
open(out, "w").write("\n\n".join(reports) + ("\n" if reports else ""))
for r in reports:
    print(r.splitlines()[0])
print("static-analysis: %d report(s), %d new, %d known false positives; paths in %s"
      % (len(reports), new, len(reports) - new, out))
sys.exit(1 if new else 0)
EOF
