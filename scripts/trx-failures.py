#!/usr/bin/env python3
# Prints each failed test of the given TRX files with its message and the top of its stack
# trace, so a CI log that shows only its tail still says why a test failed.
import signal
import sys
import xml.etree.ElementTree as ET

signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet when piped into head

NS = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}

for path in sys.argv[1:]:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as error:
        print(f"[failures] cannot read {path}: {error}")
        continue
    for result in root.iterfind(".//t:UnitTestResult", NS):
        if result.get("outcome") not in ("Failed", "Error"):
            continue
        message = result.findtext("t:Output/t:ErrorInfo/t:Message", default="", namespaces=NS).strip()
        stack = result.findtext("t:Output/t:ErrorInfo/t:StackTrace", default="", namespaces=NS).strip()
        print(f"[failed] {result.get('testName')} ({result.get('duration')})")
        lines = message.splitlines()
        for line in lines[:40]:
            print("    " + line[:400])
        if len(lines) > 40:
            print(f"    ... {len(lines) - 40} more lines")
        for line in stack.splitlines()[:8]:
            print("    " + line.strip()[:300])
