"""Open docs pages in headless Chromium, as a reader would, and report what a reader would see wrong.

Chromium is driven over the DevTools protocol (a websocket, `websocket-client`). For each page it waits for the
load event and for MathJax, then fails on: a formula left as raw `$...$`, `\\(...\\)` or `\\[...\\]`; a MathJax TeX
error; a `#|` directive shown in code or text; Quarto attribute text (`{target="_blank"}`) or a `:::` fence shown;
an image that did not load; a link to a local page or anchor that does not exist; a JavaScript error or a failed
load; any request that would leave the machine (blocked: the pages must work offline); an API entry that reads
"Call self as a function." (no docstring). It saves a screenshot of the whole page.
"""
import base64, json, os, re, shutil, signal, subprocess, sys, tempfile, time, urllib.parse, urllib.request
from pathlib import Path

CANDIDATES = ("chromium", "chromium-headless-shell", "google-chrome", "google-chrome-stable", "chrome",
              "headless_shell", "chromium-browser",
              "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
              "/Applications/Chromium.app/Contents/MacOS/Chromium")
APT_PACKAGE = "chromium-headless-shell"  # Debian's headless Chromium (no desktop libraries)

def _works(exe):
    "Does `exe --version` run? (Ubuntu's `chromium-browser` can be a stub that asks for a snap.)"
    try: return subprocess.run([exe, "--version"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired): return False

def find_chromium():
    "The browser to use: `$CHROMIUM` if set, else the first working one of `CANDIDATES`; None when there is none."
    if os.environ.get("CHROMIUM"): return os.environ["CHROMIUM"]
    for c in CANDIDATES:
        exe = shutil.which(c) or (c if os.path.isabs(c) and os.path.exists(c) else None)
        if exe and _works(exe): return exe
    return None

def ensure_chromium():
    "Find Chromium; when there is none and we are root on Debian/Ubuntu, `apt-get install` it (once). Exit with what to do otherwise."
    exe = find_chromium()
    if exe: return exe
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"docs-check: no Chromium found; installing Debian's {APT_PACKAGE} with apt-get (once)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", APT_PACKAGE]):
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if r.returncode: sys.exit(f"docs-check: `{' '.join(cmd)}` failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
        exe = find_chromium()
        if exe: return exe
    sys.exit("docs-check: the browser test needs Chromium or Chrome. Install it (Debian: `apt-get install "
             f"{APT_PACKAGE}`), or point CHROMIUM at one, or run `tools/docs_check.py --no-browser`.")

class Browser:
    "One headless Chromium with one page, spoken to over the DevTools protocol."
    def __init__(self, exe, width=1280, height=900, timeout=60):
        try: import websocket  # websocket-client: a dev requirement (and jupyter_server's)
        except ImportError: sys.exit("docs-check: the browser test needs websocket-client, a dev requirement: run `make setup`.")
        self.width, self.height, self.timeout, self.n, self.events = width, height, timeout, 0, []
        self.tmp = tempfile.mkdtemp(prefix="docs-check-chromium-")
        # --no-sandbox: Chromium's sandbox refuses root and fails in some containers; these are our own pages, offline.
        args = [exe, "--headless", "--no-sandbox", "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={self.tmp}",
                "--no-first-run", "--no-default-browser-check", "--disable-gpu", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-pings",
                "--disable-default-apps", "--disable-domain-reliability", "--hide-scrollbars", "--mute-audio",
                f"--window-size={width},{height}", "about:blank"]
        self.log = open(Path(self.tmp)/"chromium.log", "wb")
        # A session of its own: Debian's /usr/bin/chromium* are shell wrappers, so stopping means stopping the group.
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        port = self._port()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as r:
            target = next(t for t in json.load(r) if t["type"] == "page")
        self.ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True)
        for m in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"): self.send(m)
        self.send("Network.setBlockedURLs", urls=["http://*", "https://*", "ws://*", "wss://*", "ftp://*"])
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def _port(self):
        "The DevTools port Chromium chose (it writes it to DevToolsActivePort in its profile folder)."
        f, t0 = Path(self.tmp)/"DevToolsActivePort", time.time()
        while time.time() - t0 < self.timeout:
            if f.exists() and f.read_text().strip(): return int(f.read_text().split()[0])
            if self.proc.poll() is not None: break
            time.sleep(0.1)
        self.close()
        sys.exit("docs-check: Chromium did not start:\n" + (Path(self.tmp)/"chromium.log").read_text(errors="replace")[-3000:])

    def send(self, method, **params):
        "Send one command and return its result; events that arrive meanwhile are kept in `self.events`."
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                if "error" in msg: raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg: self.events.append(msg)

    def wait_for(self, event, timeout=None):
        "Wait until `event` has arrived (it may have already)."
        deadline = time.time() + (timeout or self.timeout)
        while not any(e["method"] == event for e in self.events):
            self.ws.settimeout(max(0.1, deadline - time.time()))
            try: msg = json.loads(self.ws.recv())
            except Exception: raise TimeoutError(f"no {event} within {timeout or self.timeout} s")
            finally: self.ws.settimeout(self.timeout)
            if "method" in msg: self.events.append(msg)

    def evaluate(self, js):
        "Run `js` in the page (awaiting a promise) and return its value."
        r = self.send("Runtime.evaluate", expression=js, awaitPromise=True, returnByValue=True, timeout=self.timeout * 1000)
        if "exceptionDetails" in r: raise RuntimeError(f"page script failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def open(self, url):
        "Load `url` and wait for its load event; events from before are dropped."
        self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height, deviceScaleFactor=1, mobile=False)
        self.events = []
        self.send("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def screenshot(self, path, max_pixels=32000):
        "Save the whole page as a PNG, scaled down if it is taller than `max_pixels`."
        h = int(max(self.send("Page.getLayoutMetrics")["cssContentSize"]["height"], self.height))
        self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=h, deviceScaleFactor=1, mobile=False)
        png = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True, optimizeForSpeed=True,
                        clip={"x": 0, "y": 0, "width": self.width, "height": h, "scale": min(1, max_pixels / h)})["data"]
        Path(path).write_bytes(base64.b64decode(png))

    def close(self):
        "Stop Chromium (its whole process group: Browser.close, then SIGKILL after 10 s) and remove its profile."
        try: self.send("Browser.close"); self.ws.close()
        except Exception: pass
        deadline = time.time() + 10
        while True:
            self.proc.poll()  # reap the wrapper, so that it does not keep the group alive
            try: os.killpg(self.proc.pid, signal.SIGKILL if time.time() > deadline else 0)
            except ProcessLookupError: break
            time.sleep(0.05)
        self.proc.wait()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

# What the page reports about itself, once MathJax is done: its prose (code and typeset math removed), its code,
# its images, links and ids, and MathJax's count of formulas.
PAGE_REPORT = r"""(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  if (document.fonts) await document.fonts.ready;
  const prose = [];
  for (const el of document.querySelectorAll('p, li, td, th, h1, h2, h3, h4, h5, h6, dt, dd, figcaption, summary, .description, .navbar, .page-navigation')) {
    if (el.closest('pre')) continue;
    const c = el.cloneNode(true);
    c.querySelectorAll('pre, code, script, style, mjx-container, svg, ul, ol, p, table').forEach(e => e.remove());
    const t = c.textContent.trim();
    if (t) prose.push(t);
  }
  return {
    title: document.title, h1: (document.querySelector('h1.title') || {}).textContent || '',
    prose, code: [...document.querySelectorAll('pre')].map(p => p.textContent),
    images: [...document.images].map(i => ({src: i.currentSrc.slice(0, 120), ok: i.complete && i.naturalWidth > 0})),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
    undocumented: [...document.querySelectorAll('p')].filter(p => p.textContent.trim() === 'Call self as a function.').map(p => {
      let e = p; while (e && e.tagName !== 'H3') e = e.previousElementSibling; return e ? e.textContent.trim() : '?'; }),
    math: {spans: document.querySelectorAll('span.math').length,
           typeset: document.querySelectorAll('span.math mjx-container').length,
           errors: [...document.querySelectorAll('mjx-merror')].map(e => e.getAttribute('data-mjx-error') || e.textContent)},
  };
})()"""

RAW_MATH = re.compile(r"\$\$|(?<![\w$])\$[^\s$](?:[^$]*?[^\s$])?\$(?!\d)|\\\(|\\\[")
ATTR_TEXT = re.compile(r"\{(?:[.#][\w-]+|[\w-]+=)[^{}]*\}")

def page_problems(report, events):
    "What a reader would see wrong on one page, from its `PAGE_REPORT` and the DevTools events of its load."
    probs = []
    if not report["h1"].strip(): probs.append("no title (front matter lost?)")
    for t in report["prose"]:
        for m in RAW_MATH.finditer(t): probs.append(f"raw formula shown: …{t[max(0, m.start() - 30):m.end() + 30]}…")
        for m in ATTR_TEXT.finditer(t): probs.append(f"attribute text shown: {m.group(0)[:80]}")
        if re.search(r"(^|\n)\s*(#\||:::)", t): probs.append(f"directive or fence shown: {t[:80]}")
    for c in report["code"]:
        for line in c.splitlines():
            if re.match(r"\s*#\|", line): probs.append(f"directive shown in code: {line.strip()[:80]}")
    m = report["math"]
    if m["typeset"] < m["spans"]: probs.append(f"MathJax typeset {m['typeset']} of {m['spans']} formulas (is MathJax loaded?)")
    probs += [f"TeX error: {e[:120]}" for e in m["errors"]]
    probs += [f"API entry without a docstring ('Call self as a function.'): {n}" for n in report["undocumented"]]
    probs += [f"image did not load: {i['src']}" for i in report["images"] if not i["ok"]]
    for e in events:
        p = e.get("params", {})
        if e["method"] == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            probs.append(f"JavaScript error: {(d.get('exception') or {}).get('description') or d.get('text')}"[:300])
        elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") == "error":
            probs.append("console error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))[:300])
        elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
            probs.append(f"browser error: {p['entry']['text']} {p['entry'].get('url', '')}"[:300])
        elif e["method"] == "Network.requestWillBeSent":
            url = p["request"]["url"]
            if not url.startswith(("file:", "data:", "about:", "blob:")): probs.append(f"requests {url[:120]} (pages must work offline)")
    return list(dict.fromkeys(probs))

def link_problems(reports, out: Path):
    "Links from the checked pages to local files or anchors that do not exist."
    ids = {Path(url2path(u)).resolve(): set(r["ids"]) for u, r in reports.items()}
    probs = {}
    for url, r in reports.items():
        for href in r["links"]:
            if not href.startswith("file:"): continue
            path, _, frag = href.partition("#")
            target = Path(url2path(path)).resolve()
            if not target.exists(): probs.setdefault(url, []).append(f"broken link: {href}")
            elif frag and target in ids and urllib.parse.unquote(frag) not in ids[target]:
                probs.setdefault(url, []).append(f"broken anchor: {os.path.relpath(target, out.resolve())}#{frag}")
    return {u: list(dict.fromkeys(p)) for u, p in probs.items()}

def url2path(url):
    "The local path of a `file:` URL."
    return urllib.parse.unquote(urllib.parse.urlparse(url).path)

def check_pages(files, out: Path, shots: Path, exe=None):
    "Open each HTML file in Chromium; return {file: [problems]} (an empty list for a good page) and save screenshots in `shots`."
    shots.mkdir(parents=True, exist_ok=True)
    b, reports, probs = Browser(exe or ensure_chromium()), {}, {}
    try:
        for f in files:
            url = Path(f).resolve().as_uri()
            try:
                b.open(url)
                reports[url] = b.evaluate(PAGE_REPORT)
                b.screenshot(shots/(os.path.relpath(Path(f).with_suffix(".png"), out).replace(os.sep, "_")))
                probs[url] = page_problems(reports[url], b.events)
            except Exception as e: probs[url] = [f"could not be checked: {type(e).__name__}: {e}"]
    finally: b.close()
    for url, p in link_problems(reports, out).items(): probs[url] += p
    return {Path(url2path(u)): p for u, p in probs.items()}
