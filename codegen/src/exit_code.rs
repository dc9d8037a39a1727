//! The exit statuses of `microvm-codegen`, shared by its commands (validate, generate, lint,
//! options), so a command reports through them without depending on the command line.

/// A spec or configuration was read but refused.
pub const EXIT_REFUSED: u8 = 1;
/// Usage and I/O errors.
pub const EXIT_USAGE: u8 = 2;
/// A valid spec that could not be rendered: a bug of the generator.
pub const EXIT_INTERNAL: u8 = 3;
