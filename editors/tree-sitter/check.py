"""Validate highlights.scm against the KDL tree-sitter grammar, offline once fetched.

    npm pack tree-sitter-kdl@2.0.0 && tar xzf tree-sitter-kdl-2.0.0.tgz
    gcc -shared -fPIC -Ipackage/src package/src/parser.c package/src/scanner.c -o kdl.so
    python3 -m pip install tree-sitter        # 0.22 or later
    python3 editors/tree-sitter/check.py kdl.so

The query must compile against the grammar (every node, field and predicate exists), and on
a vmform spec it must mark what it says it marks.
"""

import ctypes
import pathlib
import sys

import tree_sitter as ts

lib = ctypes.cdll.LoadLibrary(sys.argv[1])
lib.tree_sitter_kdl.restype = ctypes.c_void_p
language = ts.Language(lib.tree_sitter_kdl())
query = ts.Query(language, (pathlib.Path(__file__).parent / "highlights.scm").read_text())
source = b'param "env" default="prod"\ntemplate "linux" {\n    namespace "shop-${env}"\n}\nvm "web" template="linux" {\n    cpu 2\n}\n'
tree = ts.Parser(language).parse(source)
cursor = ts.QueryCursor(query) if hasattr(ts, "QueryCursor") else None
matches = cursor.matches(tree.root_node) if cursor else query.matches(tree.root_node)
got = sorted(
    (name, source[node.start_byte:node.end_byte].decode())
    for _, captures in matches
    for name, nodes in captures.items()
    if not name.startswith("_")
    for node in nodes
)
want = sorted([
    ("keyword", "param"), ("keyword", "template"), ("keyword", "vm"),
    ("label", '"linux"'),
    ("string.special", '"shop-${env}"'),
])
assert got == want, f"{got}\n!=\n{want}"
print("highlights.scm: ok")
