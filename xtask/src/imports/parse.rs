//! What one source file says about its crate's modules: the paths of the crate it refers to,
//! and the names its top-level `use` items and definitions put in its module. Read with `syn`.

use std::collections::{BTreeMap, BTreeSet};

use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::visit::{self, Visit};
use syn::{Attribute, ImplItem, Item, UseTree};

/// A module's path inside its crate: `["fdpass", "context"]`; the crate root is empty.
pub type ModPath = Vec<String>;

/// A reference from a file to a path of its crate, made absolute (`crate::` left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The path, from the crate root: the module part, then perhaps an item and more.
    pub path: ModPath,
    /// The line of the file the reference is on.
    pub line: usize,
}

/// What a file says about its crate's modules.
#[derive(Debug, Default)]
pub struct FileFacts {
    /// Every path of the crate the file refers to, outside code compiled only for tests.
    pub references: Vec<Reference>,
    /// The names the file's top-level `use` items bring into its module, with the absolute path
    /// each stands for (what re-exports resolve through).
    pub imports: BTreeMap<String, ModPath>,
    /// The modules the file's top-level glob imports bring in wholesale.
    pub globs: Vec<ModPath>,
    /// The names of the items the file defines at its top level.
    pub defines: BTreeSet<String>,
    /// Child modules declared `#[cfg(test)] mod name;`: files compiled only for tests.
    pub test_children: Vec<String>,
    /// Whether the whole file is compiled only for tests (`#![cfg(test)]`).
    pub test_only: bool,
}

/// Reads `source`, the file of module `module`; `modules` are every file module of the crate
/// (so that a path starting with a child module's name is known for one).
pub fn parse_file(
    source: &str,
    module: &[String],
    modules: &BTreeSet<ModPath>,
) -> syn::Result<FileFacts> {
    let file = syn::parse_file(source)?;
    let mut visitor =
        Visitor { module, modules, inline: Vec::new(), depth: 0, facts: FileFacts::default() };
    if test_only(&file.attrs) {
        visitor.facts.test_only = true;
        return Ok(visitor.facts);
    }
    for item in &file.items {
        visitor.visit_item(item);
    }
    Ok(visitor.facts)
}

/// Whether attributes make an item exist only in test builds: `#[cfg(test)]`, or
/// `#[cfg(all(.., test, ..))]`.
fn test_only(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|attr| {
        let syn::Meta::List(list) = &attr.meta else { return false };
        if !list.path.is_ident("cfg") {
            return false;
        }
        let tokens: Vec<TokenTree> = list.tokens.clone().into_iter().collect();
        match tokens.as_slice() {
            [TokenTree::Ident(test)] => test == "test",
            [TokenTree::Ident(all), TokenTree::Group(group)] if all == "all" => {
                // A top-level `test` among the conditions: an ident between commas.
                let inner: Vec<TokenTree> = group.stream().into_iter().collect();
                inner
                    .split(|t| matches!(t, TokenTree::Punct(p) if p.as_char() == ','))
                    .any(|part| matches!(part, [TokenTree::Ident(i)] if i == "test"))
            }
            _ => false,
        }
    })
}

/// The attributes of an item.
fn item_attrs(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// The name an item defines in its module, if it defines one.
fn defined_name(item: &Item) -> Option<String> {
    let ident = match item {
        Item::Const(i) => &i.ident,
        Item::Enum(i) => &i.ident,
        Item::Fn(i) => &i.sig.ident,
        Item::Macro(i) => i.ident.as_ref()?,
        Item::Mod(i) => &i.ident,
        Item::Static(i) => &i.ident,
        Item::Struct(i) => &i.ident,
        Item::Trait(i) => &i.ident,
        Item::TraitAlias(i) => &i.ident,
        Item::Type(i) => &i.ident,
        Item::Union(i) => &i.ident,
        _ => return None,
    };
    Some(ident.to_string())
}

/// One leaf of a `use` tree: the path it imports, the name it binds (none for a glob), and
/// its line.
struct UseLeaf {
    path: Vec<String>,
    name: Option<String>,
    line: usize,
}

/// Flattens a `use` tree below `prefix` into its leaves.
fn use_leaves(tree: &UseTree, prefix: &mut Vec<String>, out: &mut Vec<UseLeaf>) {
    match tree {
        UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_leaves(&p.tree, prefix, out);
            prefix.pop();
        }
        UseTree::Name(n) => out.push(leaf(prefix, &n.ident, None)),
        UseTree::Rename(r) => out.push(leaf(prefix, &r.ident, Some(&r.rename))),
        UseTree::Glob(g) => out.push(UseLeaf {
            path: prefix.clone(),
            name: None,
            line: g.star_token.spans[0].start().line,
        }),
        UseTree::Group(g) => {
            for tree in &g.items {
                use_leaves(tree, prefix, out);
            }
        }
    }
}

/// The leaf `prefix::ident` (`as rename`); `self` stands for the prefix itself.
fn leaf(prefix: &[String], ident: &syn::Ident, rename: Option<&syn::Ident>) -> UseLeaf {
    let mut path = prefix.to_vec();
    let is_self = ident == "self";
    if !is_self {
        path.push(ident.to_string());
    }
    let name = match rename {
        Some(rename) => Some(rename.to_string()),
        None => path.last().cloned(),
    };
    UseLeaf { path, name, line: ident.span().start().line }
}

/// The walk over one file.
struct Visitor<'a> {
    /// The file's module.
    module: &'a [String],
    /// Every file module of the crate.
    modules: &'a BTreeSet<ModPath>,
    /// The inline modules (`mod name { .. }`) the walk is inside.
    inline: Vec<String>,
    /// How deep the walk is inside items other than modules (a function, an impl).
    depth: usize,
    facts: FileFacts,
}

impl Visitor<'_> {
    /// Whether the walk is at the file's top level, where items belong to its module.
    fn at_top(&self) -> bool {
        self.depth == 0 && self.inline.is_empty()
    }

    /// The absolute path `segments` stands for here, if it is a path of this crate: one
    /// starting with `crate`, `super` or `self`, or with the name of a child module of this
    /// file (if it has at least `min_len` segments: a lone name is a variable as often).
    fn absolute(&self, segments: &[String], min_len: usize) -> Option<ModPath> {
        let here = || -> ModPath { self.module.iter().chain(&self.inline).cloned().collect() };
        let (mut base, mut rest) = match segments.first()?.as_str() {
            "crate" | "$crate" => (Vec::new(), &segments[1..]),
            "self" => (here(), &segments[1..]),
            "super" => (here(), segments),
            first => {
                let mut child = self.module.to_vec();
                child.push(first.to_owned());
                let known = self.inline.is_empty() && self.modules.contains(&child);
                return (known && segments.len() >= min_len)
                    .then(|| self.module.iter().chain(segments).cloned().collect());
            }
        };
        while let Some((first, after)) = rest.split_first()
            && first == "super"
        {
            base.pop()?;
            rest = after;
        }
        base.extend_from_slice(rest);
        Some(base)
    }

    /// Records a reference to `segments` on `line`, if it is a path of this crate.
    fn refer(&mut self, segments: &[String], min_len: usize, line: usize) -> Option<ModPath> {
        let path = self.absolute(segments, min_len)?;
        self.facts.references.push(Reference { path: path.clone(), line });
        Some(path)
    }

    /// A `use` item: references, and at the top level the names it binds.
    fn use_item(&mut self, item: &syn::ItemUse) {
        if item.leading_colon.is_some() {
            return;
        }
        let mut leaves = Vec::new();
        use_leaves(&item.tree, &mut Vec::new(), &mut leaves);
        let top = self.at_top();
        for leaf in leaves {
            let Some(path) = self.refer(&leaf.path, 1, leaf.line) else { continue };
            if top {
                match leaf.name {
                    Some(name) => {
                        self.facts.imports.insert(name, path);
                    }
                    None => self.facts.globs.push(path),
                }
            }
        }
    }

    /// Finds the paths in a macro's tokens (which `syn` leaves unparsed): runs of
    /// `name::name::..` that do not continue a path.
    fn macro_tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            let continues = i >= 2 && is_path_sep(&tokens[i - 2], &tokens[i - 1]);
            match &tokens[i] {
                TokenTree::Group(group) => {
                    self.macro_tokens(group.stream());
                    i += 1;
                }
                TokenTree::Ident(first) if !continues => {
                    let dollar = i >= 1
                        && matches!(&tokens[i - 1], TokenTree::Punct(p) if p.as_char() == '$');
                    let mut segments = vec![if dollar && first == "crate" {
                        "$crate".to_owned()
                    } else {
                        first.to_string()
                    }];
                    let mut j = i + 1;
                    while let (Some(a), Some(b), Some(TokenTree::Ident(next))) =
                        (tokens.get(j), tokens.get(j + 1), tokens.get(j + 2))
                    {
                        if !is_path_sep(a, b) {
                            break;
                        }
                        segments.push(next.to_string());
                        j += 3;
                    }
                    if segments.len() > 1 {
                        self.refer(&segments, 2, first.span().start().line);
                    }
                    i = j;
                }
                _ => i += 1,
            }
        }
    }
}

/// Whether two tokens are `::`.
fn is_path_sep(a: &TokenTree, b: &TokenTree) -> bool {
    matches!((a, b), (TokenTree::Punct(x), TokenTree::Punct(y))
        if x.as_char() == ':' && x.spacing() == Spacing::Joint && y.as_char() == ':')
}

impl<'ast> Visit<'ast> for Visitor<'_> {
    fn visit_item(&mut self, item: &'ast Item) {
        if test_only(item_attrs(item)) {
            if let Item::Mod(m) = item
                && m.content.is_none()
                && self.at_top()
            {
                self.facts.test_children.push(m.ident.to_string());
            }
            return;
        }
        if self.at_top()
            && let Some(name) = defined_name(item)
        {
            self.facts.defines.insert(name);
        }
        match item {
            Item::Use(u) => self.use_item(u),
            Item::Mod(m) => {
                if let Some((_, items)) = &m.content {
                    self.inline.push(m.ident.to_string());
                    for item in items {
                        self.visit_item(item);
                    }
                    self.inline.pop();
                }
            }
            _ => {
                self.depth += 1;
                visit::visit_item(self, item);
                self.depth -= 1;
            }
        }
    }

    fn visit_impl_item(&mut self, item: &'ast ImplItem) {
        let attrs = match item {
            ImplItem::Const(i) => &i.attrs,
            ImplItem::Fn(i) => &i.attrs,
            ImplItem::Type(i) => &i.attrs,
            ImplItem::Macro(i) => &i.attrs,
            _ => return visit::visit_impl_item(self, item),
        };
        if !test_only(attrs) {
            visit::visit_impl_item(self, item);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none()
            && let Some(first) = path.segments.first()
        {
            let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
            self.refer(&segments, 2, first.ident.span().start().line);
        }
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        visit::visit_macro(self, mac);
        self.macro_tokens(mac.tokens.clone());
    }

    // `pub(crate)`, `pub(super)` and `pub(in path)` name who may see an item, not what it uses.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}
}
