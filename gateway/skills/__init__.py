"""Skills: a folder with a SKILL.md contract, scripts and a prompt, run around a model call.

The files, each importing only those above it::

    template.py   the sandboxed prompt template engine ({{ name }}, {{#if}}, {{#each}})
    bundle.py     a skill's files and their sha256 hash (the identity of its code)
    contract.py   input and output field types; validate_inputs, outputs_from_model, check_outputs
    manifest.py   SKILL.md parsed into SkillSpec, errors naming the line; names, refs, requirements
    folder.py     Skill, load_skill_dir, discover, DiskSkills: skills read from folders on disk
    registry.py   SkillRegistry: versions in Redis (deploy, roll back, pin), bundles materialised by hash
    catalog.py    SkillCatalog: which copy of a skill a job runs (skills.source); routed_request

The skill errors (``SkillError`` and its subclasses) live in ``gateway/errors.py`` with the rest
of the tree. Running the scripts is the worker's job (``workers/skill_runner.py``).
"""

from gateway.skills.bundle import MAX_BUNDLE_BYTES, BundleFile, bundle_hash, read_bundle
from gateway.skills.catalog import SkillCatalog, routed_request
from gateway.skills.contract import (
    TEXT_TYPES,
    Contract,
    FieldType,
    InputSpec,
    OutputSpec,
    check_outputs,
    check_schema,
    json_kind,
    outputs_from_model,
    schema_problem,
    type_problem,
    validate_inputs,
)
from gateway.skills.folder import DiskSkills, Skill, SkillSource, discover, load_skill_dir
from gateway.skills.manifest import (
    NAME_PATTERN,
    PROMPT_HEADING,
    PROTECTED_ENV,
    RESERVED_NAMES,
    SEMVER_PATTERN,
    SKILL_FILE,
    Requires,
    RunSpec,
    ScriptSpec,
    SkillSpec,
    SkillTimeouts,
    check_name,
    is_protected_env,
    missing_requirements,
    parse_ref,
    version_key,
)
from gateway.skills.registry import (
    DeployResult,
    SkillRegistry,
    SkillVersion,
    decode_bundle,
    encode_bundle,
    remove_tree,
)
from gateway.skills.template import Template, TemplateError, render

__all__ = [
    "MAX_BUNDLE_BYTES",
    "NAME_PATTERN",
    "PROMPT_HEADING",
    "PROTECTED_ENV",
    "RESERVED_NAMES",
    "SEMVER_PATTERN",
    "SKILL_FILE",
    "TEXT_TYPES",
    "BundleFile",
    "Contract",
    "DeployResult",
    "DiskSkills",
    "FieldType",
    "InputSpec",
    "OutputSpec",
    "Requires",
    "RunSpec",
    "ScriptSpec",
    "Skill",
    "SkillCatalog",
    "SkillRegistry",
    "SkillSource",
    "SkillSpec",
    "SkillTimeouts",
    "SkillVersion",
    "Template",
    "TemplateError",
    "bundle_hash",
    "check_name",
    "check_outputs",
    "check_schema",
    "decode_bundle",
    "discover",
    "encode_bundle",
    "is_protected_env",
    "json_kind",
    "load_skill_dir",
    "missing_requirements",
    "outputs_from_model",
    "parse_ref",
    "read_bundle",
    "remove_tree",
    "render",
    "routed_request",
    "schema_problem",
    "type_problem",
    "validate_inputs",
    "version_key",
]
