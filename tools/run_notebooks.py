"""Execute notebooks in place so their committed outputs are current, as a student would run them (IN_TEST unset),
skipping the cells nbdev's tests skip: `#| slow` and `#| cuda` ones (they keep their old outputs), `#| eval: false` and
`nbdev_export()`. Then run `nbdev_clean`.

    .venv/bin/python tools/run_notebooks.py nbs/04_itm_training.ipynb nbs/05_inference.ipynb
"""
import os, sys, time
from pathlib import Path
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from fastcore.xtras import working_directory
from nbdev.config import get_config

SKIP_FLAGS = tuple(get_config().tst_flags.split())     # settings.ini's tst_flags: slow cuda

def skip(cell) -> bool:
    "Whether nbdev's tests would leave this cell out."
    if cell.cell_type != "code": return True
    if "nbdev_export" + "(" in cell.source: return True
    directives = [l[2:].strip() for l in cell.source.splitlines() if l.startswith("#|")]
    return any(d.split()[0] in SKIP_FLAGS for d in directives if d) or any(d.replace(" ", "") == "eval:false" for d in directives)

def run(path: Path) -> float:
    "Execute one notebook in its folder and write it back with its new outputs; the seconds it took."
    os.environ.pop("IN_TEST", None)
    nb, t0 = read_nb(path), time.time()
    with working_directory(path.parent): CaptureShell(path).run_all(nb, exc_stop=True, preproc=skip)
    write_nb(nb, path)
    return time.time() - t0

if __name__ == "__main__":
    if len(sys.argv) > 2:                       # one process per notebook: no figure or state leaks into the next
        import subprocess
        for p in sys.argv[1:]: subprocess.run([sys.executable, __file__, p], check=True)
    else:
        for p in sys.argv[1:]: print(f"{p}: {run(Path(p).resolve()):.0f} s", flush=True)
