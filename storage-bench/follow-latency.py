import subprocess, threading, time, sys, statistics, re, tempfile, os
bin = sys.argv[1]
d = tempfile.mkdtemp()
node = subprocess.Popen([f"{bin}/journal-node", "--data-dir", d, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-level", "warning"], stdout=subprocess.PIPE, text=True)
addr = None
while addr is None:
    line = node.stdout.readline()
    if line.startswith("journal "): addr = line.split()[1]
subprocess.run([f"{bin}/strata", "--node", addr, "shard", "create", "lat"], check=True, capture_output=True)
cons = subprocess.Popen([f"{bin}/strata", "--node", addr, "consume", "lat", "--follow", "--offsets"], stdout=subprocess.PIPE, text=True)
seen = {}
def reader():
    for line in cons.stdout:
        seen[line.split("\t")[0]] = time.monotonic()
threading.Thread(target=reader, daemon=True).start()
time.sleep(0.5)
prod = subprocess.Popen([f"{bin}/strata", "--node", addr, "produce", "lat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
lat = []; full = []
for i in range(50):
    sent = time.monotonic(); prod.stdin.write(f"m{i}\n"); prod.stdin.flush()
    off = prod.stdout.readline().strip()
    acked = time.monotonic()
    while off not in seen: time.sleep(0.0002)
    lat.append((seen[off] - acked) * 1000); full.append((seen[off] - sent) * 1000)
    time.sleep(0.02)
prod.stdin.close(); prod.wait(); cons.kill(); node.terminate(); node.wait()
lat.sort()
print(f"produce-ack -> follow-consumer print, ms: p50 {statistics.median(lat):.2f}, p90 {lat[int(len(lat)*0.9)]:.2f}, max {lat[-1]:.2f} (n={len(lat)})")
full.sort(); print(f"line written to producer stdin -> consumer print (includes fsync), ms: p50 {statistics.median(full):.2f}, p90 {full[int(len(full)*0.9)]:.2f}, max {full[-1]:.2f}")
