"""`make docs-check`: the docs a reader sees, checked without Quarto, installing nothing into the project or Python.

1. nbdev's docs processing, called through its Python API (`nbdev.serve.proc_nbs`) with the project's settings:
   every notebook into `_proc/`, exactly as `nbdev_docs` prepares them for Quarto. Not `nbdev_proc_nbs`, which
   first tries to install Quarto (sudo, then `pip install -e .[dev]` with whatever pip is on PATH) and, with
   `--force`, rewrites the tracked `nbs/sidebar.yml`.
2. `docs_pages.py` renders each page of `nbs/sidebar.yml` to `_docs_check/` looking like the site (title block,
   sidebar with sections, table of contents, previous/next links, directives obeyed, figures embedded, math by a
   local MathJax). It fails on a sidebar entry with no notebook or a notebook in no sidebar entry.
3. `docs_browser.py` opens every page in headless Chromium and fails on what a reader would see wrong (raw
   formulas, shown directives or attribute text, images that did not load, broken local links or anchors,
   JavaScript errors, requests off the machine); one screenshot per page goes to `_docs_check/screenshots/`.

Two tools are fetched once, when absent, from package registries (nothing else touches the network): MathJax 3
from npm into the git-ignored `_docs_check/site_libs/`, and Chromium with apt-get (root only; `CHROMIUM=path`
picks another). `--no-browser` stops after step 2 and fetches nothing.
"""
import argparse, hashlib, os, shutil, subprocess, sys, tarfile, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT/"tools"), str(ROOT)]  # this checkout's package, also in nbdev's worker processes
import docs_pages  # noqa: E402

MATHJAX_NPM = "mathjax@3.2.2"
MATHJAX_FILE = "package/es5/tex-svg-full.js"  # one file: TeX input, SVG output (no fonts to load), every extension
MATHJAX_SHA256 = "a4354ff94fd868aea0cc6eaaa79a57fda0588646fc46ee3700a349ee0a11cbe6"

def show(path):
    "`path` relative to the repository when it is inside it, for messages."
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path

def process_notebooks(n_workers=2):
    "nbdev's docs processing of every notebook into `_proc/`, through its API: no Quarto check, no installer, no sidebar rewrite."
    from nbdev.config import get_config
    from nbdev.serve import proc_nbs
    cfg = get_config(path=ROOT)
    return Path(proc_nbs(path=cfg.nbs_path, n_workers=n_workers, force=True)), cfg

def ensure_mathjax(out: Path):
    "The local MathJax the pages load (`out/site_libs/mathjax/`): fetched once from npm when absent, checked by hash."
    dest = out/docs_pages.MATHJAX
    if dest.exists() and hashlib.sha256(dest.read_bytes()).hexdigest() == MATHJAX_SHA256: return dest
    if not shutil.which("npm"): sys.exit(f"docs-check: the pages need MathJax ({MATHJAX_NPM}, from npm) and npm is not installed.")
    print(f"docs-check: fetching {MATHJAX_NPM} from npm into {show(dest.parent)}/ (once)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(["npm", "pack", MATHJAX_NPM, "--silent", "--pack-destination", tmp], capture_output=True, text=True)
        tgz = next(Path(tmp).glob("*.tgz"), None)
        if r.returncode or tgz is None: sys.exit(f"docs-check: `npm pack {MATHJAX_NPM}` failed: {r.stderr[-2000:]}")
        with tarfile.open(tgz) as t: data = t.extractfile(MATHJAX_FILE).read()
    if hashlib.sha256(data).hexdigest() != MATHJAX_SHA256: sys.exit(f"docs-check: {MATHJAX_NPM}'s {MATHJAX_FILE} is not the file this check was written for (sha256 differs).")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return dest

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-browser", action="store_true", help="process and render only: no browser test, nothing fetched")
    ap.add_argument("--out", default=str(ROOT/"_docs_check"), help="output folder, its .html pages replaced (default: _docs_check)")
    args = ap.parse_args(argv)
    out, t0 = Path(args.out).resolve(), time.time()
    os.chdir(ROOT)  # nbdev finds settings.ini from the working directory

    proc, cfg = process_notebooks()
    t1 = time.time()
    print(f"docs-check: nbdev processed the notebooks into {show(proc)}/ in {t1 - t0:.1f} s", flush=True)
    for old in out.glob("**/*.html"): old.unlink()  # pages of notebooks since renamed or removed
    pages, problems = docs_pages.build_site(cfg.nbs_path, proc, out, cfg.title, f"{cfg.doc_host}{cfg.doc_baseurl}")
    for p in pages: print(f"docs-check: {p.src} -> {show(out/p.out)}  ({p.title})")
    print(f"docs-check: {len(pages)} pages rendered in {time.time() - t1:.1f} s", flush=True)

    if not args.no_browser:
        ensure_mathjax(out)
        import docs_browser
        t2, shots = time.time(), out/"screenshots"
        for old in shots.glob("*.png"): old.unlink()
        found = docs_browser.check_pages([out/p.out for p in pages], out, shots)
        for f, probs in found.items():
            problems += [f"{f.relative_to(out)}: {p}" for p in probs]
        print(f"docs-check: Chromium opened {len(found)} pages in {time.time() - t2:.1f} s; screenshots in {show(shots)}/", flush=True)
    if problems: sys.exit(f"docs-check failed ({len(problems)} problems):\n  " + "\n  ".join(problems))
    print(f"docs-check: OK, {len(pages)} pages in {time.time() - t0:.1f} s (open {show(out/'index.html')}); the site itself is built by nbdev_docs with Quarto.")

if __name__ == "__main__": main()
