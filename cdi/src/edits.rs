//! Combining [`ContainerEdits`]: the reference's `ContainerEdits.Append`.
//!
//! Lists (env, device nodes, net devices, hooks, mounts, additional GIDs) are concatenated in
//! order; a later `intelRdt` replaces an earlier one. Duplicates are kept here and resolved when
//! the edits are applied (a later device node or mount at the same path wins there).

use crate::spec::ContainerEdits;

impl ContainerEdits {
    /// [`ContainerEdits::append`] of edits that are not needed afterwards.
    pub fn append_owned(&mut self, other: ContainerEdits) {
        self.env.extend(other.env);
        self.device_nodes.extend(other.device_nodes);
        self.net_devices.extend(other.net_devices);
        self.hooks.extend(other.hooks);
        self.mounts.extend(other.mounts);
        if other.intel_rdt.is_some() {
            self.intel_rdt = other.intel_rdt;
        }
        self.additional_gids.extend(other.additional_gids);
    }

    /// Appends `other` to these edits.
    pub fn append(&mut self, other: &ContainerEdits) {
        self.env.extend_from_slice(&other.env);
        self.device_nodes.extend_from_slice(&other.device_nodes);
        self.net_devices.extend_from_slice(&other.net_devices);
        self.hooks.extend_from_slice(&other.hooks);
        self.mounts.extend_from_slice(&other.mounts);
        if other.intel_rdt.is_some() {
            self.intel_rdt.clone_from(&other.intel_rdt);
        }
        self.additional_gids
            .extend_from_slice(&other.additional_gids);
    }
}

/// Concatenates several edits, in order, into one.
pub fn merge<'a>(all: impl IntoIterator<Item = &'a ContainerEdits>) -> ContainerEdits {
    let mut out = ContainerEdits::default();
    for e in all {
        out.append(e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{DeviceNode, Hook, IntelRdt, Mount, NetDevice};

    fn edits(tag: &str, rdt: Option<&str>) -> ContainerEdits {
        ContainerEdits {
            env: vec![format!("{tag}=1")],
            device_nodes: vec![DeviceNode {
                path: format!("/dev/{tag}"),
                ..Default::default()
            }],
            hooks: vec![Hook {
                hook_name: "createContainer".into(),
                path: format!("/bin/{tag}"),
                ..Default::default()
            }],
            mounts: vec![Mount {
                host_path: format!("/h/{tag}"),
                container_path: format!("/c/{tag}"),
                ..Default::default()
            }],
            intel_rdt: rdt.map(|c| IntelRdt {
                clos_id: Some(c.into()),
                ..Default::default()
            }),
            additional_gids: vec![tag.len() as u32],
            net_devices: vec![NetDevice {
                host_interface_name: format!("h{tag}"),
                name: format!("n{tag}"),
            }],
        }
    }

    #[test]
    fn append_concatenates_in_order() {
        let mut a = edits("a", Some("one"));
        a.append(&edits("bb", None));
        assert_eq!(a.env, ["a=1", "bb=1"]);
        assert_eq!(a.device_nodes[1].path, "/dev/bb");
        assert_eq!(a.hooks[1].path, "/bin/bb");
        assert_eq!(a.mounts[1].container_path, "/c/bb");
        assert_eq!(a.additional_gids, [1, 2]);
        assert_eq!(a.net_devices[1].name, "nbb");
        // No intelRdt in the later edits keeps the earlier one.
        assert_eq!(
            a.intel_rdt.as_ref().unwrap().clos_id.as_deref(),
            Some("one")
        );
        a.append(&edits("c", Some("two")));
        assert_eq!(
            a.intel_rdt.as_ref().unwrap().clos_id.as_deref(),
            Some("two")
        );
    }

    #[test]
    fn merge_of_nothing_is_empty_and_empty_is_neutral() {
        assert!(merge([]).is_empty());
        let e = edits("x", Some("c"));
        assert_eq!(
            merge([&ContainerEdits::default(), &e, &ContainerEdits::default()]),
            e
        );
    }
}
