; extends
;
; vmform's own highlights for KDL files, on top of the KDL grammar's
; (tree-sitter-kdl 2.x, https://github.com/tree-sitter-grammars/tree-sitter-kdl).
; The `; extends` line above makes Neovim add these to the grammar's own queries; see
; the book's chapter "Editor support".

; The top-level nodes of the language are its keywords.
((node
  name: (identifier) @keyword)
  (#any-of? @keyword "vm" "template" "instancetype" "param" "defaults" "include"))

; (The names that `vm`, `template` and `param` declare are not marked: a pattern of a `node`
; with a `node_field` child makes tree-sitter's query analysis run without end on this
; grammar.)

; References to them: `template="linux"`, `instancetype="small"`.
((prop
  key: (identifier) @_refers
  value: (value
    (string) @label))
  (#any-of? @_refers "template" "instancetype"))

; `${param}` in a string: the whole string is marked special.
((string) @string.special
  (#match? @string.special "\\$\\{[A-Za-z0-9_-]+\\}"))
