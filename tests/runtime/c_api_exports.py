#!/usr/bin/env python3
"""Every function dmoe/dmoe.h declares is exported by the shared libdmoe. Usage: c_api_exports.py HEADER LIBRARY"""
import re
import subprocess
import sys

header, library = sys.argv[1], sys.argv[2]
declared = set(re.findall(r"DMOE_API\b[^;(]*?\b(dmoe_\w+)\s*\(", open(header).read()))
if len(declared) < 30:
    sys.exit(f"FAIL: only {len(declared)} DMOE_API functions parsed from {header}: the pattern is stale")
out = subprocess.run(["nm", "-D", "--defined-only", library], check=True, capture_output=True, text=True).stdout
exported = {line.split()[-1] for line in out.splitlines() if " T " in line}
missing = sorted(declared - exported)
if missing:
    sys.exit(f"FAIL: {library} does not export {', '.join(missing)}")
print(f"{len(declared)} C ABI functions declared in {header}, all exported by {library}")
