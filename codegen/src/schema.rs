//! The JSON Schema of the runner spec, generated from the Rust types. The committed copy
//! (`doc/runner-spec.schema.json`) is kept equal to it by a test.

use crate::spec::RunnerSpec;

pub fn runner_spec_schema() -> schemars::Schema {
    schemars::schema_for!(RunnerSpec)
}

pub fn runner_spec_schema_json() -> String {
    serde_json::to_string_pretty(&runner_spec_schema()).expect("a schema always serializes")
}
