#!/usr/bin/env python3
"""Reference chat renderings for tests/test_chat.c (engine/chat.c).

transformers' apply_chat_template (Jinja) renders a set of conversations with
the chat template stored in the GGUF (`tokenizer.chat_template`, loaded by
AutoTokenizer.from_pretrained(dir, gguf_file=...)) and with the plain ChatML
template engine/chat.c also knows, with and without the generation prompt.
For the GGUF's template the rendered text is also encoded by the corrected
tokenizer of gen_bpe_fixture.py (special tokens parsed, nothing added), so
the test checks the prompt ids end to end.

Writes tests/fixtures/chat_render.jsonl: one {"template", "messages",
"add_generation_prompt", "text", "ids"} per case ("ids" only for "smollm2").

usage: gen_chat_fixture.py GGUF   (tests/tools/make_fixtures.sh runs it)
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_bpe_fixture  # noqa: E402

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
          "{% endif %}")


def m(role, content):
    return {"role": role, "content": content}


CONVERSATIONS = [
    [m("user", "Hello!")],
    [m("system", "You are terse."), m("user", "What is 2+2?")],
    [m("user", "Name three colours."), m("assistant", "Red, green and blue."), m("user", "And two more?")],
    [m("system", "Answer in French."), m("user", "Good morning"), m("assistant", "Bonjour"),
     m("user", "Thank you  very much\n\nreally")],
    [m("assistant", "I start the conversation.")],
    [m("system", "Only a system message.")],
    [m("user", "")],
    [m("user", "Unicode: café, 日本語, 😀, مرحبا, 12345 and tabs\tand\r\nlines")],
    [m("user", "first"), m("system", "a late system message"), m("user", "second")],
    [m("user", "  leading and trailing spaces  \n")],
]  # transformers refuses an empty conversation


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_chat_fixture.py GGUF")
    from transformers import AutoTokenizer

    path = sys.argv[1]
    tok = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(path)), gguf_file=os.path.basename(path))
    hf = gen_bpe_fixture.hf_from_transformers(path)
    n = 0
    with open(os.path.join(FIX, "chat_render.jsonl"), "w", encoding="utf-8") as f:
        for name, tmpl in (("smollm2", None), ("chatml", CHATML)):
            for conv in CONVERSATIONS:
                for gen in (False, True):
                    text = tok.apply_chat_template(conv, chat_template=tmpl, tokenize=False,
                                                   add_generation_prompt=gen)
                    rec = {"template": name, "messages": conv, "add_generation_prompt": gen, "text": text}
                    if name == "smollm2":
                        rec["ids"] = hf.encode(text, add_special_tokens=False).ids
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    n += 1
    print(f"chat fixture: {n} cases; template of the file:\n{tok.chat_template}", file=sys.stderr)


if __name__ == "__main__":
    main()
