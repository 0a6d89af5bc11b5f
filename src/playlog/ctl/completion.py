"""A bash completion script for `playlog ctl`, generated from its parser.

Install: `eval "$(playlog ctl completion bash)"` (or save it under
/etc/bash_completion.d/). Completes `ctl`, the ctl commands, their options and
file names after -f.
"""

from __future__ import annotations

import argparse


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(s for a in parser._actions for s in a.option_strings if s.startswith("--") or len(s) == 2)


def _o_takes_a_file(parser: argparse.ArgumentParser) -> bool:
    """Whether -o of this command (or of one of its subcommands) names a file
    rather than the output format (`ctl bxf export-as-run -o FILE`)."""
    for action in parser._actions:
        if "-o" in action.option_strings and action.choices is None:
            return True
    return any(_o_takes_a_file(sub) for sub in _subparsers(parser).values())


def bash_completion(parser: argparse.ArgumentParser) -> str:
    commands = _subparsers(parser)
    file_output = "|".join(name for name, sub in commands.items() if _o_takes_a_file(sub)) or "-"
    cases = []
    for name, sub in commands.items():
        words = _options(sub) + list(_subparsers(sub))
        cases.append(f'        {name}) words="{" ".join(words)}" ;;')
    case_body = "\n".join(cases)
    return f"""# bash completion for playlog ctl
_playlog_ctl() {{
    local cur prev cmd i words
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "serve verify token ctl" -- "$cur")); return
    fi
    [ "${{COMP_WORDS[1]}}" = ctl ] || {{ COMPREPLY=($(compgen -f -- "$cur")); return; }}
    cmd=""
    for ((i = 2; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in -*) ;; *) cmd="${{COMP_WORDS[i]}}"; break ;; esac
    done
    case "$prev" in
        -f|--file|--ca-cert|--client-cert|--client-key) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        -o|--output)
            case "$cmd" in
                {file_output}) COMPREPLY=($(compgen -f -- "$cur")) ;;
                *) COMPREPLY=($(compgen -W "table json" -- "$cur")) ;;
            esac
            return ;;
    esac
    case "$cmd" in
{case_body}
        *) words="{" ".join(list(commands) + _options(parser))}" ;;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -F _playlog_ctl playlog"""
