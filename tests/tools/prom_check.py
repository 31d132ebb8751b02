"""Parse a /metrics scrape with prometheus_client's own parser and check the
names sluice promises: exits 0 when valid, 1 with the reason otherwise.
usage: prom_check.py FILE [REQUIRED_FAMILY...]"""
import sys

from prometheus_client.parser import text_string_to_metric_families

text = open(sys.argv[1]).read()
try:
    fams = list(text_string_to_metric_families(text))
except Exception as e:  # the parser raises ValueError on bad exposition
    print(f"prom-check: FAIL: not valid Prometheus text: {e}")
    sys.exit(1)
names = {f.name: f for f in fams}
bad = [f.name for f in fams if not f.name.startswith("sluice_")]
if bad:
    print(f"prom-check: FAIL: families without the sluice_ prefix: {bad}")
    sys.exit(1)
for f in fams:
    if f.type == "histogram":
        if not any(s.name.endswith("_bucket") for s in f.samples) and f.samples:
            print(f"prom-check: FAIL: histogram {f.name} without buckets")
            sys.exit(1)
    if f.type == "counter":
        for s in f.samples:
            if s.value < 0:
                print(f"prom-check: FAIL: counter {s.name} is negative")
                sys.exit(1)
missing = [n for n in sys.argv[2:] if n not in names]
if missing:
    print(f"prom-check: FAIL: missing families: {missing}")
    sys.exit(1)
print(f"prom-check: ok, {len(fams)} families, {sum(len(f.samples) for f in fams)} samples")
