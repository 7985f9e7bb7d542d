"""From tool schemas to a decoded call: everything the model's output is shaped by.

Schema dialects normalised (``schema``), the grammar built from them
(``grammar``), the call envelope and its parser (``calls``), the prompt
(``prompts``), which tools are offered (``tool_select``) and structured
answers (``structured``). Pure code: no model, no I/O. A change to what the
model may emit, or to what it is told, goes here.
"""
