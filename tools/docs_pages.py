"""The docs-check pages: nbdev's processed notebooks (`_proc/`) rendered to HTML that looks like the Quarto site.

What the site does, done here without Quarto: the pages and their order come from `nbs/sidebar.yml` (sections
included); each page's title, description and file name come from its front matter (nbdev turns a notebook's
`# Title` and `> summary` into it); `#|` directives are obeyed and never shown (`echo`, `output`, `include`,
`code-fold`); Quarto's `{...}` attributes are applied to the link, image or heading they follow; headings get
Pandoc's ids; math is written as Pandoc writes it (`\\(...\\)` in `span.math`) for a local MathJax copy; figures are
embedded; links to another notebook or to the site's own URL point at the local page; every page has the sidebar,
a table of contents and previous/next links.
"""
import html, os, re, shutil
from dataclasses import dataclass
from pathlib import Path
import nbformat, yaml
from nbconvert.filters.ansi import strip_ansi
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

MATHJAX = "site_libs/mathjax/tex-svg-full.js"  # relative to the output folder; docs_check.py fetches it
OUTPUT_MIMES = ("text/html", "text/markdown", "image/svg+xml", "image/png", "image/jpeg", "text/plain")

# ---------------------------------------------------------------- the pages, from nbs/sidebar.yml

def sidebar_entries(nbs: Path):
    "The entries of `nbs/sidebar.yml` as a tree: `{'href', 'text'}` for a page, `{'section', 'href', 'contents'}` for a section."
    y = yaml.safe_load((nbs/"sidebar.yml").read_text(encoding="utf-8")) or {}
    sidebar = (y.get("website") or {}).get("sidebar")
    if isinstance(sidebar, list): sidebar = sidebar[0]  # several sidebars: the first is the site's
    if not sidebar or "contents" not in sidebar: raise ValueError("nbs/sidebar.yml has no website.sidebar.contents")
    return _entries(sidebar["contents"], nbs)

def _entries(items, nbs):
    "Parse a sidebar `contents` list (strings, globs, `href`/`text` pairs, sections)."
    out = []
    for e in [items] if isinstance(items, (str, dict)) else items:
        if isinstance(e, str) and any(c in e for c in "*?["):
            out += [{"href": p.relative_to(nbs).as_posix(), "text": None} for p in sorted(nbs.glob(e))]
        elif isinstance(e, str): out.append({"href": e, "text": None})
        elif isinstance(e, dict) and "section" in e:
            out.append({"section": e["section"], "href": e.get("href"), "contents": _entries(e.get("contents") or [], nbs)})
        elif isinstance(e, dict) and "href" in e: out.append({"href": e["href"], "text": e.get("text")})
        else: raise ValueError(f"nbs/sidebar.yml: cannot read the entry {e!r}")
    return out

def page_order(entries):
    "Every page of the sidebar tree in reading order (a section's own page before its contents)."
    out = []
    for e in entries:
        if e.get("href"): out.append(e["href"])
        out += page_order(e.get("contents", []))
    return out

def site_notebooks(nbs: Path):
    "The notebooks Quarto would render: every `.ipynb` under `nbs/` outside `_`/`.` folders and files."
    return sorted(p.relative_to(nbs).as_posix() for p in nbs.rglob("*.ipynb")
                  if not any(part.startswith(("_", ".")) for part in p.relative_to(nbs).parts))

# ---------------------------------------------------------------- Pandoc ids and Quarto attributes

class Ids:
    "Pandoc's `auto_identifiers` for one page: the heading text made into an id, `-1`, `-2`... for repeats."
    def __init__(self): self.seen = {}
    def __call__(self, text):
        text = html.unescape(re.sub(r"<[^>]+>", "", text)).replace("\\(", "").replace("\\)", "")
        ident = "-".join("".join(c for c in text.lower() if c.isalnum() or c in "_-. ").split())
        ident = re.sub(r"^[^a-z\u00c0-\uffff]+", "", ident) or "section"
        n = self.seen.get(ident, -1) + 1
        self.seen[ident] = n
        return ident if n == 0 else f"{ident}-{n}"

_ATTR = re.compile(r"""([#.][\w:-]+)|([\w:-]+)=("[^"]*"|'[^']*'|[^\s"']+)""")

def parse_attrs(text):
    "Quarto/Pandoc attributes `#id .class key=\"value\"` as a dict (`class` joined by spaces)."
    a, classes = {}, []
    for hid, key, val in _ATTR.findall(html.unescape(text)):
        if hid.startswith("#"): a["id"] = hid[1:]
        elif hid: classes.append(hid[1:])
        else: a[key] = val[1:-1] if val[:1] in "\"'" else val
    if classes: a["class"] = " ".join(classes)
    return a

def attr_html(a):
    "A dict of attributes as HTML."
    return "".join(f' {k}="{html.escape(str(v))}"' for k, v in a.items())

_LINK_ATTRS = re.compile(r"(<(?:a|img)\b[^>]*?)(/?)>((?:(?!</a>).)*?</a>)?\{([^{}\n]*)\}", re.S)

def apply_attrs(h):
    "Move Quarto's `{...}` after a link or image into its tag: `[x](u){target=\"_blank\"}` -> `<a href=u target=...>`."
    def sub(m):
        tag, slash, rest, attrs = m.groups()
        return f"{tag}{attr_html(parse_attrs(attrs))}{slash}>{rest or ''}"
    return _LINK_ATTRS.sub(sub, h)

_FENCED_DIV = re.compile(r"^:::+\s*(?:\{([^}]*)\}|([\w-]+))?\s*$", re.M)

def fenced_divs(md):
    "Quarto's fenced divs (`::: {.callout-note}` ... `:::`) as HTML divs, the markdown inside still markdown."
    def sub(m):
        attrs, cls = m.groups()
        if attrs is None and cls is None: return "\n</div>\n"
        a = parse_attrs(attrs) if attrs is not None else {"class": cls}
        return f"\n<div{attr_html(a)}>\n"
    return _FENCED_DIV.sub(sub, md)

# ---------------------------------------------------------------- markdown

class _Renderer(IPythonRenderer):
    "nbconvert's markdown renderer with Pandoc's heading ids, Quarto's heading attributes and Pandoc's math spans."
    def __init__(self, ids, **kw):
        super().__init__(escape=False, exclude_anchor_links=True, **kw)
        self.ids = ids
    def heading(self, text, level, **attrs):
        m = re.search(r"\s*\{([^{}]*)\}\s*$", text)
        a = parse_attrs(m.group(1)) if m else {}
        if m: text = text[:m.start()]
        a = {"id": a.pop("id", None) or self.ids(text), **a}
        return f"<h{level}{attr_html(a)}>{text}</h{level}>\n"
    def inline_math(self, body): return f'<span class="math inline">\\({self.escape_html(body)}\\)</span>'
    def block_math(self, body): return f'<span class="math display">\\[{self.escape_html(body)}\\]</span>'
    def latex_environment(self, name, body):
        return f'<span class="math display">\\[\\begin{{{name}}}{self.escape_html(body)}\\end{{{name}}}\\]</span>'

def markdown(md, ids, path=".", attachments=None):
    "Markdown (with math, Quarto attributes and fenced divs) as HTML; local images embedded."
    r = _Renderer(ids, embed_images=True, path=str(path), attachments=attachments)
    return apply_attrs(MarkdownWithMath(renderer=r).render(fenced_divs(md)))

# ---------------------------------------------------------------- cells

_DIRECTIVE = re.compile(r"^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$")

def directives(source):
    "The leading `#| key: value` lines of a code cell as a dict (a bare `#| hide` is True), and the rest of the source."
    lines, d = source.splitlines(), {}
    while lines and (m := _DIRECTIVE.match(lines[0])):
        key, val = m.groups()
        try: d[key] = yaml.safe_load(val) if val else True
        except yaml.YAMLError: d[key] = val
        lines.pop(0)
    return d, "\n".join(lines)

def pre(text, cls):
    "Plain text in a `pre`, ANSI colours removed."
    return f'<div class="{cls}"><pre><code>{html.escape(strip_ansi(text))}</code></pre></div>'

def render_output(o, ids, path):
    "One output of a code cell as the site shows it."
    if o.output_type == "stream": return pre(o.text, f"cell-output cell-output-{o.name}")
    if o.output_type == "error": return pre("\n".join(o.traceback), "cell-output cell-output-error")
    data = o.get("data", {})
    mime = next((m for m in OUTPUT_MIMES if m in data), None)
    if mime is None: return ""
    body = data[mime]
    if mime == "text/html": return f'<div class="cell-output cell-output-display">{body}</div>'
    if mime == "text/markdown": return f'<div class="cell-output cell-output-display">{markdown(body, ids, path)}</div>'
    if mime == "image/svg+xml": return f'<div class="cell-output cell-output-display">{body}</div>'
    if mime.startswith("image/"):
        return f'<div class="cell-output cell-output-display"><img src="data:{mime};base64,{body.strip()}" alt=""></div>'
    return pre(body, "cell-output cell-output-display")

def render_code(source):
    "Code cell source, highlighted."
    code = highlight(source, PythonLexer(), HtmlFormatter(nowrap=True))
    return f'<div class="sourceCode cell-code"><pre class="sourceCode python"><code>{code}</code></pre></div>'

def render_cell(cell, ids, path):
    "One cell as the site shows it: directives obeyed and never shown."
    if cell.cell_type == "markdown": return markdown(cell.source, ids, path, cell.get("attachments"))
    if cell.cell_type == "raw": return markdown(cell.source, ids, path)
    d, source = directives(cell.source)
    if d.get("include") is False or d.get("hide"): return ""
    parts = []
    if d.get("echo", True) is not False and source.strip():
        code = render_code(source)
        fold = d.get("code-fold")
        if fold: code = f'<details{" open" if fold == "show" else ""}><summary>{html.escape(str(d.get("code-summary", "Code")))}</summary>{code}</details>'
        parts.append(code)
    if d.get("output", True) is not False: parts += [render_output(o, ids, path) for o in cell.get("outputs", [])]
    return f'<div class="cell">{"".join(parts)}</div>' if parts else ""

# ---------------------------------------------------------------- pages

@dataclass
class Page:
    "One page of the site: its notebook (relative to nbs/), its file in the output, its front matter and cells."
    src: str
    out: str
    title: str
    description: str
    nb: object

def front_matter(nb):
    "The YAML front matter nbdev puts in a processed notebook's first raw cell, and the cells after it."
    cells = list(nb.cells)
    m = re.fullmatch(r"\s*---\s*\n(.*?)\n?---\s*", cells[0].source, re.S) if cells and cells[0].cell_type == "raw" else None
    return (yaml.safe_load(m.group(1)) or {}, cells[1:]) if m else ({}, cells)

def load_page(proc: Path, src: str):
    "Read `_proc/src` into a `Page` (title, description and output file from its front matter)."
    nb = nbformat.read(proc/src, as_version=4)
    fm, nb.cells = front_matter(nb)
    out = (Path(src).parent/fm.get("output-file", Path(src).with_suffix(".html").name)).as_posix()
    return Page(src, out, str(fm.get("title", Path(src).stem)), str(fm.get("description", "")), nb)

def rel(target, page):
    "`target` (a path in the output folder) relative to `page`'s folder."
    return os.path.relpath(target, Path(page.out).parent.as_posix() or ".")

def rewrite_links(body, page, pages, site_url):
    "Links to a notebook (`02_attention.ipynb#x`) or to the site's own URL point at the local page instead."
    by_src = {p.src: p.out for p in pages}
    def sub(m):
        url = html.unescape(m.group(2))
        path, hash_, frag = url.partition("#")
        if site_url and (path + "/").startswith(site_url + "/"):
            target = path[len(site_url):].strip("/") or "index.html"
            return f'{m.group(1)}"{html.escape(rel(target, page) + hash_ + frag)}"'
        if path.endswith(".ipynb") and "://" not in path:
            src = os.path.normpath((Path(page.src).parent/path).as_posix())
            if src in by_src: return f'{m.group(1)}"{html.escape(rel(by_src[src], page) + hash_ + frag)}"'
        return m.group(0)
    return re.sub(r'(href=)"([^"]*)"', sub, body)

def nav_html(entries, page, pages):
    "The sidebar: every page by its title, sections as headings, the current page marked."
    by_src = {p.src: p for p in pages}
    def link(href, text=None):
        if href not in by_src:  # a web address, or a missing page (reported by build_site)
            return f'<a href="{html.escape(href)}">{html.escape(text or href)}</a>' if "://" in href else html.escape(text or href)
        p = by_src[href]
        cur = ' class="active" aria-current="page"' if p is page else ""
        return f'<a href="{html.escape(rel(p.out, page))}"{cur}>{html.escape(text or p.title)}</a>'
    def items(es):
        out = []
        for e in es:
            if "section" in e:
                head = link(e["href"], e["section"]) if e.get("href") else html.escape(e["section"])
                out.append(f'<li class="sidebar-section"><span class="sidebar-section-title">{head}</span><ul>{items(e["contents"])}</ul></li>')
            else: out.append(f"<li>{link(e['href'], e.get('text'))}</li>")
        return "".join(out)
    return f"<ul>{items(entries)}</ul>"

def toc_html(body):
    "'On this page': the page's h2 and h3 headings."
    items = [f'<li class="toc-h{lvl}"><a href="#{i}">{re.sub(r"<[^>]+>", "", t)}</a></li>'
             for lvl, i, t in re.findall(r'<h([23]) id="([^"]*)"[^>]*>(.*?)</h\1>', body, re.S)]
    return f'<h2 id="toc-title">On this page</h2><ul>{"".join(items)}</ul>' if items else ""

def pager_html(page, order, pages):
    "Previous and next page links, in the sidebar's order."
    by_src = {p.src: p for p in pages}
    i = order.index(page.src)
    prev = by_src[order[i - 1]] if i > 0 else None
    nxt = by_src[order[i + 1]] if i + 1 < len(order) else None
    a = lambda p, cls, label: (f'<div class="nav-page nav-page-{cls}"><a href="{html.escape(rel(p.out, page))}" rel="{cls}">'
                               f'{label.format(html.escape(p.title))}</a></div>' if p else f'<div class="nav-page nav-page-{cls}"></div>')
    return f'<nav class="page-navigation">{a(prev, "prev", "← {}")}{a(nxt, "next", "{} →")}</nav>'

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head>
<meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{site_title} - {title}</title>
<meta name="description" content="{description_attr}">
<style>{site_css}</style>
<style>{pygments_css}</style>
{css_links}
<script>window.MathJax = {{tex: {{inlineMath: [["\\\\(", "\\\\)"]], displayMath: [["\\\\[", "\\\\]"]], processEscapes: false}},
  options: {{processHtmlClass: "math", ignoreHtmlClass: "tex2jax_ignore"}}, svg: {{fontCache: "global"}}}};</script>
<script defer src="{mathjax}"></script>
</head><body>
<header class="navbar"><a class="navbar-title" href="{home}">{site_title}</a></header>
<div class="page-layout">
<nav id="quarto-sidebar" class="sidebar">{nav}</nav>
<main class="content" id="quarto-document-content">
<header id="title-block-header"><h1 class="title">{title}</h1>{description}</header>
{body}
{pager}
</main>
<nav id="TOC" class="toc">{toc}</nav>
</div>
</body></html>
"""

SITE_CSS = """
body { margin: 0; font-family: "Source Sans Pro", -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  font-size: 17px; line-height: 1.5; color: #343a40; background: #fff; }
a { color: #2780e3; text-decoration: underline; text-decoration-color: rgba(39,128,227,.35); }
.navbar { background: #2780e3; padding: .6rem 1.5rem; }
.navbar-title { color: #fff; font-size: 1.25rem; text-decoration: none; }
.page-layout { display: grid; grid-template-columns: minmax(170px, 250px) minmax(0, 850px) minmax(150px, 230px); gap: 1.5rem;
  justify-content: center; padding: 0 1rem; }
.sidebar, .toc { position: sticky; top: 0; align-self: start; max-height: 100vh; overflow-y: auto; padding-top: 1.5rem; font-size: .9rem; }
.sidebar ul, .toc ul { list-style: none; padding-left: 0; margin: 0; }
.sidebar li { margin: .35rem 0; } .sidebar ul ul { padding-left: .8rem; }
.sidebar a { color: #595959; text-decoration: none; } .sidebar a.active { color: #2780e3; font-weight: 600; }
.sidebar-section-title { display: block; font-weight: 600; margin-top: .8rem; color: #343a40; }
.toc { border-left: 1px solid #dee2e6; padding-left: .8rem; } .toc h2 { font-size: .95rem; margin: 0 0 .4rem; }
.toc a { color: #595959; text-decoration: none; } .toc .toc-h3 { padding-left: .8rem; font-size: .85rem; }
main.content { padding: 1.5rem 0 3rem; }
h1.title { font-size: 2.4rem; font-weight: 500; margin: 0 0 .3rem; }
h2 { font-size: 1.6rem; font-weight: 500; border-bottom: 1px solid #dee2e6; padding-bottom: .3rem; margin-top: 2.2rem; }
h3 { font-size: 1.3rem; font-weight: 500; margin-top: 1.6rem; }
code { font-family: SFMono-Regular, Menlo, Monaco, Consolas, "Liberation Mono", monospace; font-size: .875em; color: #9753b8; }
pre code { color: #343a40; } a code { color: #2780e3; }
pre { background: rgba(233,236,239,.65); padding: .6rem .8rem; border-radius: .25rem; overflow-x: auto; line-height: 1.35; }
.cell-output-stderr pre { color: #a94442; }
.cell-output img { max-width: 100%; height: auto; }
img { max-width: 100%; }
blockquote { border-left: .25rem solid #e9ecef; margin-left: 0; padding-left: 1rem; color: #6c757d; }
table { border-collapse: collapse; margin: 1rem 0; font-size: .95rem; } th, td { border-bottom: 1px solid #dee2e6; padding: .3rem .6rem; text-align: left; }
hr { border: 0; border-top: 1px solid #dee2e6; margin: 2rem 0 1rem; }
.math.display { display: block; overflow-x: auto; }
.page-navigation { display: flex; justify-content: space-between; border-top: 1px solid #dee2e6; margin-top: 3rem; padding-top: 1rem; }
.page-navigation a { text-decoration: none; font-size: 1.05rem; }
details > summary { cursor: pointer; color: #6c757d; }
.callout, [class*="callout-"] { border-left: .3rem solid #2780e3; background: #f8f9fa; padding: .5rem 1rem; margin: 1rem 0; }
"""

def render_page(page, entries, order, pages, site):
    "The HTML of one page: title block, cells, previous/next links, the sidebar and the table of contents."
    ids, path = Ids(), site["proc"]/Path(page.src).parent
    body = "\n".join(filter(None, (render_cell(c, ids, path) for c in page.nb.cells)))
    body = rewrite_links(body, page, pages, site["url"])
    desc = f'<div class="description">{markdown(page.description, Ids())}</div>' if page.description else ""
    css = "".join(f'<link rel="stylesheet" href="{html.escape(rel(c, page))}">' for c in site["css"])
    return TEMPLATE.format(
        site_title=html.escape(site["title"]), title=html.escape(page.title), description=desc,
        description_attr=html.escape(page.description), site_css=SITE_CSS,
        pygments_css=HtmlFormatter().get_style_defs([".sourceCode", ".highlight"]), css_links=css, mathjax=rel(MATHJAX, page),
        home=rel(next((p.out for p in pages if p.out == "index.html"), pages[0].out), page), nav=nav_html(entries, page, pages), body=body,
        pager=pager_html(page, order, pages), toc=toc_html(body))

def quarto_css(nbs: Path):
    "The stylesheets `nbs/_quarto.yml` gives the HTML format (`format: html: css:`)."
    q = yaml.safe_load((nbs/"_quarto.yml").read_text(encoding="utf-8")) if (nbs/"_quarto.yml").exists() else {}
    css = (((q or {}).get("format") or {}).get("html") or {}).get("css") or []
    return [css] if isinstance(css, str) else list(css)

def build_site(nbs: Path, proc: Path, out: Path, title: str, site_url: str):
    """Render every page of `nbs/sidebar.yml` from `proc` into `out`; return (pages written, problems found).

    A problem is a sidebar entry with no notebook, a notebook that is in no sidebar entry (Quarto would publish it
    with no way to reach it), or two notebooks that become the same page. Files other than notebooks and `.yml` are copied, as Quarto copies resources."""
    entries, problems = sidebar_entries(nbs), []
    order = page_order(entries)
    problems += [f"nbs/sidebar.yml lists {s}, which is not a notebook in nbs/" for s in order
                 if "://" not in s and (not s.endswith(".ipynb") or not (nbs/s).exists())]
    problems += [f"nbs/{s} is in no entry of nbs/sidebar.yml: add it (a reader cannot reach it)" for s in site_notebooks(nbs) if s not in order]
    order = [s for s in order if s.endswith(".ipynb") and (proc/s).exists()]
    pages = [load_page(proc, s) for s in order]
    outs = [p.out for p in pages]
    problems += [f"{p.src} and another notebook both become {p.out}" for p in pages if outs.count(p.out) > 1]
    site = {"title": title, "url": site_url.rstrip("/"), "proc": proc, "css": quarto_css(nbs)}
    out.mkdir(parents=True, exist_ok=True)
    for f in proc.rglob("*"):
        if f.is_file() and f.suffix not in (".ipynb", ".yml", ".yaml"):
            (out/f.relative_to(proc)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, out/f.relative_to(proc))
    written = []
    for page in pages:
        dest = out/page.out
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(render_page(page, entries, order, pages, site), encoding="utf-8")
        written.append(page)
    return written, problems
