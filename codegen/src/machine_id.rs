//! The VM's machine id: `microvm.machineId`, or a name-based UUID (v5, DNS namespace) of the
//! host name. Computing it here keeps import-from-derivation out of the Nix side.

use crate::spec::RunnerSpec;

pub fn machine_id(spec: &RunnerSpec) -> String {
    match &spec.machine_id {
        Some(id) => id.clone(),
        None => uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_DNS, spec.host_name.as_bytes())
            .hyphenated()
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_rfc_4122_example() {
        // RFC 4122 / Python's uuid.uuid5(NAMESPACE_DNS, "python.org").
        let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_DNS, b"python.org");
        assert_eq!(id.to_string(), "886313e1-3b8a-5372-9b90-0c9aee199e5d");
    }
}
