"""Times N scrapes of two HTTP endpoints, interleaved (A B A B ...), each on a new connection as
Prometheus makes them; prints "p50_a p99_a p50_b p99_b bytes_a bytes_b series_a series_b" in ms."""
import sys
import time
import urllib.request


def scrape(url):
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        body = r.read()
    return (time.perf_counter() - started) * 1000.0, body


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100.0 * (len(ordered) - 1))))]


def series(body):
    return sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))


n, url_a, url_b = int(sys.argv[1]), sys.argv[2], sys.argv[3]
times_a, times_b = [], []
for _ in range(n):
    t, body_a = scrape(url_a)
    times_a.append(t)
    t, body_b = scrape(url_b)
    times_b.append(t)
print("%.2f %.2f %.2f %.2f %d %d %d %d" % (
    percentile(times_a, 50), percentile(times_a, 99), percentile(times_b, 50), percentile(times_b, 99),
    len(body_a), len(body_b), series(body_a), series(body_b)))
