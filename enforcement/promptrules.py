"""The prompt-injection rule pack: RE2 patterns over text that flows to a model, as YAML data, loaded strictly.

Contract: the same file format, loader and lint as the tool-poisoning pack
(``enforcement.toolrules``: strict YAML, duplicate and unknown keys refused,
RE2 only, samples run, every error as ``file:line: message``), with this
pack's own ``TRAITS`` and directory (``DEFAULT_PROMPT_RULES``,
``enforcement/rules/prompt/``). Rules only target ``text``. ``kubeward rules
lint --prompt`` lints it; ``load_prompt_rules`` raises ``RuleLoadError``.
"""

from __future__ import annotations

from pathlib import Path

from enforcement.toolrules import ToolRuleSet, load_tool_rules
from enforcement.toolrules import lint as lint_pack

__all__ = ["DEFAULT_PROMPT_RULES", "TRAITS", "lint", "load_prompt_rules"]

DEFAULT_PROMPT_RULES = Path(__file__).with_name("rules") / "prompt"
#: what an injection tries to do (issue 8, item 3); ``obfuscation`` is raised by normalisation, not by rules
TRAITS = ("override", "role_switch", "disclosure", "exfiltration", "tool_hijack", "output_hijack", "smuggling", "obfuscation")


def lint(path: Path = DEFAULT_PROMPT_RULES) -> list[str]:
    """Every problem in a prompt rule file or directory as ``file:line: message`` (empty when it is valid)."""
    return lint_pack(Path(path), TRAITS)


def load_prompt_rules(path: Path = DEFAULT_PROMPT_RULES) -> ToolRuleSet:
    """Load and compile a prompt rule file or directory; raises ``RuleLoadError`` listing every problem."""
    return load_tool_rules(Path(path), TRAITS)
