//! The known options as a tree of names, for looking up a setting's path one name at a time.

use std::collections::BTreeMap;

use crate::options::{OptionDecl, OptionTree, RemovedOption, RenamedOption};

/// One name in the tree: the option declared there (if any) and the names below it. `*` is a
/// list element, `<name>` any attribute name.
#[derive(Debug, Default)]
pub struct Node {
    pub children: BTreeMap<String, Node>,
    pub option: Option<usize>,
}

impl Node {
    /// The child named exactly `name` (not a wildcard).
    pub fn get(&self, name: &str) -> Option<&Node> {
        self.children
            .get(name)
            .filter(|_| name != "*" && name != "<name>")
    }

    /// The element of an attribute set of submodules.
    pub fn any_name(&self) -> Option<&Node> {
        self.children.get("<name>")
    }

    pub fn element(&self) -> Option<&Node> {
        self.children.get("*")
    }

    /// The names that can follow here, for "did you mean".
    pub fn names(&self) -> Vec<&str> {
        self.children
            .keys()
            .map(String::as_str)
            .filter(|n| *n != "*" && *n != "<name>")
            .collect()
    }
}

#[derive(Debug)]
pub struct Known {
    pub decls: Vec<OptionDecl>,
    pub removed: Vec<RemovedOption>,
    pub renamed: Vec<RenamedOption>,
    pub root: Node,
}

impl Known {
    pub fn new(tree: OptionTree) -> Known {
        let mut root = Node::default();
        for (index, decl) in tree.options.iter().enumerate() {
            let mut node = &mut root;
            for name in &decl.loc {
                node = node.children.entry(name.clone()).or_default();
            }
            // A user's redeclaration of one of our options does not replace ours.
            node.option.get_or_insert(index);
        }
        Known {
            decls: tree.options,
            removed: tree.removed,
            renamed: tree.renamed,
            root,
        }
    }

    pub fn decl(&self, node: &Node) -> Option<&OptionDecl> {
        node.option.map(|i| &self.decls[i])
    }

    pub fn removed(&self, loc: &[String]) -> Option<&RemovedOption> {
        self.removed.iter().find(|r| r.loc == loc)
    }

    /// A removed option below `loc` (`microvm.qemu.bios` for `microvm.qemu.bios.enable`): the
    /// prefix of an option that is gone is not an unknown option, it is that option.
    pub fn removed_below(&self, loc: &[String]) -> Option<&RemovedOption> {
        self.removed.iter().find(|r| r.loc.starts_with(loc))
    }

    pub fn renamed(&self, loc: &[String]) -> Option<&RenamedOption> {
        self.renamed.iter().find(|r| r.loc == loc)
    }
}
