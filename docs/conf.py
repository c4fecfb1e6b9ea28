"""Sphinx configuration of the API reference (``make docs``; CI builds it with warnings as errors)."""
from ppl_vae import __version__

project = "ppl_vae"
author = "the ppl_vae authors"
copyright = "2026, the ppl_vae authors"
release = version = __version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.mathjax"]
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the docstrings state types and shapes; signatures keep their annotations short
autoclass_content = "class"
exclude_patterns = ["_build", "figures"]
html_theme = "alabaster"
html_static_path: list[str] = []

# cross-references to ppl_vae's own names must resolve; those to other libraries are plain text (no network for
# intersphinx in CI)
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"(torch|pyro|arviz|az|matplotlib|numpy|np|xarray|pathlib|os|collections|typing)\b.*"),
                        (r"py:.*", r"(int|float|str|bool|dict|list|tuple|callable|None|Path|Tensor|Module)"),
                        (r"py:data", r".*")]  # module constants (choices, plate names) are not documented objects


def _resolve_by_suffix(app, env, node, contnode):
    """Docstrings name objects where users import them (``ppl_vae.gap.InferenceGap``, or ``Estimate`` inside the
    estimators), the reference documents them where they are defined (``ppl_vae.gap.decomposition.InferenceGap``):
    resolve a reference to the one documented ppl_vae object whose dotted name ends like the target."""
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    kinds = set(domain.objtypes_for_role(node["reftype"]) or ())
    parts = node["reftarget"].lstrip("~.").split(".")
    for start in range(len(parts)):
        suffix = "." + ".".join(parts[start:])
        found = [name for name, entry in domain.objects.items()
                 if name.startswith("ppl_vae.") and name.endswith(suffix) and (not kinds or entry.objtype in kinds)]
        if len(found) == 1:
            return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], found[0], node, contnode)
        if found:
            return None
    return None


def setup(app):
    app.connect("missing-reference", _resolve_by_suffix)
