"""Sphinx configuration of the course's web site; tools/build_site.py copies it next to the pages."""
project = "elm_lite"
author = "the elm_lite authors"
html_title = "elm_lite: an interactive course on long-tail learning"
extensions = ["myst_nb", "sphinx.ext.mathjax"]
root_doc = "README"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
nb_execution_mode = "off"            # tools/build_site.py has run the notebooks (papermill, with parameters)
nb_ipywidgets_js = {}                # no widget manager from a CDN: the pages show the apps' static versions
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
suppress_warnings = ["myst.xref_missing", "myst.header", "misc.highlighting_failure"]
html_theme = "furo"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_js_files = ["plotly.min.js", "static_apps.js"]   # one local plotly.js for every page
# MathJax 3 from the site itself, one file (TeX in, SVG out: no fonts to fetch); the pip package
# django-static-mathjax ships MathJax's own distribution
mathjax_path = "tex-svg-full.js"
html_copy_source = False             # the pages are the product; the notebooks are in the repository
html_show_sourcelink = False
