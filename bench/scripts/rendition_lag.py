#!/usr/bin/env python3
"""Rendition lag behind the source through the whole origin path.

Starts `westream serve` (binary given as argv[1]) with configs/dev.toml but the
`default` ladder on channel demo, publishes a generated 1280x720 30 fps clip
with `ffmpeg -re -c copy`, polls every rendition's media playlist every 50 ms
and reports, per segment number, how long after the source's segment N each
rendition's segment N appeared, plus the ffmpeg worker's speed.
"""
import json, os, re, signal, subprocess, sys, tempfile, time, urllib.request

# Usage: python3 bench/scripts/rendition_lag.py target/release/westream . [seconds]
binary, repo = sys.argv[1], os.path.abspath(sys.argv[2])
seconds = int(sys.argv[3]) if len(sys.argv) > 3 else 60
tmp = tempfile.mkdtemp(prefix="rlag")
cfg = open(os.path.join(repo, "configs/dev.toml")).read()
cfg = cfg.replace('channel_ladders = {}', 'channel_ladders = { demo = "default" }')
cfg = re.sub(r'(\[relay\]\nenabled = )true', r'\1false', cfg)
cfg = cfg.replace('ladders_file = "configs/ladders.toml"', f'ladders_file = "{repo}/configs/ladders.toml"')
open(f"{tmp}/cfg.toml", "w").write(cfg)
clip = f"{tmp}/clip.flv"
subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
                "-f", "lavfi", "-i", "sine", "-t", str(seconds + 10), "-c:v", "libx264", "-preset", "veryfast",
                "-g", "30", "-b:v", "3000k", "-c:a", "aac", clip], check=True)
srv = subprocess.Popen([binary, "serve", "--config", f"{tmp}/cfg.toml", "--rtmp-listen", "127.0.0.1:21935",
                        "--http-listen", "127.0.0.1:28080", "--data-dir", f"{tmp}/data"],
                       stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/server.log", "w"))
time.sleep(1.5)
pub = subprocess.Popen(["ffmpeg", "-v", "error", "-re", "-i", clip, "-c", "copy", "-f", "flv",
                        "rtmp://127.0.0.1:21935/live/demo-key"])
names = ["demo", "demo_720p", "demo_480p", "demo_360p"]
seen = {n: {} for n in names}
speeds = []
t0 = time.time()
try:
    while time.time() - t0 < seconds:
        for n in names:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:28080/live/{n}/source.m3u8", timeout=2).read().decode()
            except Exception:
                continue
            for m in re.finditer(r"^(\d+)\.ts$", text, re.M):
                seen[n].setdefault(int(m.group(1)), time.time())
        try:
            jobs = json.load(urllib.request.urlopen("http://127.0.0.1:28080/transcoder/jobs", timeout=2))
            for j in jobs["jobs"]:
                if j.get("state") == "running" and j.get("window_speed"):
                    speeds.append(j["window_speed"])
        except Exception:
            pass
        time.sleep(0.05)
finally:
    pub.send_signal(signal.SIGTERM); srv.send_signal(signal.SIGTERM)
    pub.wait(); srv.wait()
first = min(seen["demo"]) if seen["demo"] else 0
lags = []
for seq, at in seen["demo"].items():
    if seq <= first:  # was there before we looked
        continue
    for n in names[1:]:
        if seq in seen[n]:
            lags.append((seen[n][seq] - at) * 1000)
lags.sort()
common = [s for s in seen["demo"] if all(s in seen[n] for n in names[1:])]
print(f"segments: source {len(seen['demo'])}, in every rendition {len(common)}")
if lags:
    print(f"rendition segment after the source's: n={len(lags)} p50={lags[len(lags)//2]:.0f} ms "
          f"p90={lags[int(len(lags)*0.9)]:.0f} ms max={lags[-1]:.0f} ms")
if speeds:
    print(f"worker speed over its window: min {min(speeds):.3f}x, last {speeds[-1]:.3f}x")
print(f"load: {os.getloadavg()}")
