"""Write README.md from nbs/index.ipynb without Quarto (nbdev_readme needs Quarto).

README.md is the markdown of index.ipynb's cells, in order: markdown cells as they are, code cells that are
not hidden as fenced Python. `--check` exits non-zero when README.md is out of step.
"""
import re, sys
from pathlib import Path
import nbformat

ROOT = Path(__file__).resolve().parents[1]

def render(nb_path=ROOT/"nbs"/"index.ipynb"):
    nb, parts = nbformat.read(nb_path, as_version=4), []
    for c in nb.cells:
        src = c.source.strip()
        if not src or src.startswith("#| hide"): continue
        if c.cell_type == "markdown": parts.append(src)
        elif c.cell_type == "code" and not src.startswith("#|"): parts.append(f"```python\n{src}\n```")
    text = "\n\n".join(parts) + "\n"
    text = re.sub(r"\]\(([A\d]\d_\w+|index)\.ipynb\)", r"](nbs/\1.ipynb)", text)  # links work from the repo root
    return re.sub(r"\]\(images/", "](nbs/images/", text)

def main():
    text, readme = render(), ROOT/"README.md"
    if "--check" in sys.argv:
        if readme.read_text(encoding="utf-8") != text: sys.exit("README.md is out of step with nbs/index.ipynb: run `make readme`.")
        print("README.md in step with nbs/index.ipynb"); return
    readme.write_text(text, encoding="utf-8"); print(f"wrote {readme}")

if __name__ == "__main__": main()
