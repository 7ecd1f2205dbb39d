"""ctk's template renderer (the consul-template equivalent).

``render.py`` (one pass: text + dependencies + completeness), ``dependencies.py`` (dependency
keys: parsing, Consul requests, decoding), ``functions.py`` (the function library and the
``DataSource`` protocol), ``gotemplate.py`` / ``jinja.py`` (the two dialects) and ``writer.py``
(stage → check → atomic swap → rollback). Submodules are imported explicitly; importing the
package costs nothing.
"""
