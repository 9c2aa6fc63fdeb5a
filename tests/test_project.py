"Project-level checks: the package imports with its version, README is in step, the console scripts exist."
import configparser, subprocess, sys
from pathlib import Path
import simplelxmert

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

def settings(): 
    c = configparser.ConfigParser(delimiters=['=']); c.read(ROOT/"settings.ini"); return c["DEFAULT"]

def test_version_matches_settings():
    assert simplelxmert.__version__ == settings()["version"]

def test_readme_in_step_with_index():
    r = subprocess.run([sys.executable, str(ROOT/"tools"/"readme.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

def test_readme_quick_start_has_the_two_commands():
    text = (ROOT/"README.md").read_text()
    assert "make demo" in text and "make test" in text
    assert "make test" in (ROOT/".ci"/"run").read_text()

def test_console_scripts_installed_and_answer_help():
    for spec in settings()["console_scripts"].split():
        name = spec.split("=")[0]
        r = subprocess.run([str(BIN/name), "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "usage" in r.stdout.lower(), (name, r.stderr)
