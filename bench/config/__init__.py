"""Run options: the schema (`schema`), command lines to and from a `RunConfig` (`parse`), and the configuration key (`key`)."""
