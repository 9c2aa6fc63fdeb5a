"""Docs check that runs without Quarto.

1. `nbdev_proc_nbs --force`: every notebook goes through nbdev's docs processing (show_doc, directives,
   hidden cells) into `_proc/`, exactly as `nbdev_docs` does before it hands them to Quarto.
2. Each processed notebook is rendered to a standalone HTML page in `_docs_check/` with nbconvert, using the
   committed outputs (nothing is executed); `index.html` is the home page and links every chapter.
Exits non-zero, naming the notebook, if any step fails or a chapter is missing.
"""
import re, subprocess, sys
from pathlib import Path
from nbconvert import HTMLExporter
import nbformat

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ["index", "00_features", "01_dataset", "02_attention", "03_encoders", "04_itm_training", "05_inference"]

def main():
    bin_dir = Path(sys.executable).parent
    r = subprocess.run([str(bin_dir/"nbdev_proc_nbs"), "--force"], cwd=ROOT)
    if r.returncode: sys.exit(f"docs-check: nbdev_proc_nbs failed (exit {r.returncode})")
    proc, out = ROOT/"_proc", ROOT/"_docs_check"
    out.mkdir(exist_ok=True)
    exporter, links, failed = HTMLExporter(), [], []
    for name in CHAPTERS:
        src = proc/f"{name}.ipynb"
        if not src.exists(): failed.append(f"{name}: not produced by nbdev_proc_nbs"); continue
        try:
            nb = nbformat.read(src, as_version=4)
            html, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": name}})
        except Exception as e: failed.append(f"{name}: {type(e).__name__}: {e}"); continue
        html = re.sub(r'href="(\w+)\.ipynb', r'href="\1.html', html)  # chapter links, as Quarto rewrites them
        (out/f"{name}.html").write_text(html, encoding="utf-8")
        links.append(name)
        print(f"docs-check: rendered {src.relative_to(ROOT)} -> {(out/f'{name}.html').relative_to(ROOT)} ({len(html)//1024} KiB)")
    if failed: sys.exit("docs-check failed:\n  " + "\n  ".join(failed))
    print(f"docs-check: {len(links)} pages in {out.relative_to(ROOT)}/ (open index.html); the real site is built by nbdev_docs with Quarto.")

if __name__ == "__main__": main()
