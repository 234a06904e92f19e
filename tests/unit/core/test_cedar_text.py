from tenantgate.core.cedar_text import (
    annotated_id,
    escape_unprintable,
    first_unprintable,
    parse_error_position,
    position,
    split_statements,
    token_spans,
)


def test_statements_report_their_starting_line_and_column():
    text = '// header\n\n@id("a")\npermit(principal, action, resource);\n  forbid(principal, action, resource);\n'
    stmts = split_statements(text)
    assert [(s.line, s.column) for s in stmts] == [(3, 1), (5, 3)]
    assert stmts[0].text.startswith('@id("a")') and stmts[0].text.endswith(";")


def test_semicolons_inside_strings_and_comments_do_not_split():
    text = ('permit(principal, action, resource) when { context.x == "a;b\\";c" }; // x;y\n'
            'forbid(principal, action, resource);')
    stmts = split_statements(text)
    assert len(stmts) == 2
    assert stmts[1].line == 2


def test_a_trailing_fragment_without_semicolon_is_a_statement():
    stmts = split_statements("permit(principal, action, resource);\npermit(principal")
    assert [s.line for s in stmts] == [1, 2]


def test_a_carriage_return_ends_a_comment_as_it_does_for_cedar():
    # Cedar ends `//` at `\r`: the permit after it is a policy, so it must be a statement of its own.
    text = ('// hidden\rpermit(principal, action, resource);\r\nforbid(principal, action, resource);'
            '\r  @id("c") permit(principal, action, resource);')
    stmts = split_statements(text)
    assert [s.text for s in stmts] == ["permit(principal, action, resource);", "forbid(principal, action, resource);",
                                       '@id("c") permit(principal, action, resource);']
    assert [(s.line, s.column) for s in stmts] == [(2, 1), (3, 1), (4, 3)]


def test_line_numbers_count_crlf_once_and_a_lone_cr_as_a_break():
    text = "permit(principal, action, resource);\r\n\r\n\rforbid(principal, action, resource);\n\r\npermit(principal"
    assert [s.line for s in split_statements(text)] == [1, 4, 6]


def test_positions_inside_a_statement_are_file_lines_and_columns():
    (stmt,) = split_statements('// c\r\n  @id("a")\r\npermit(principal,\r  action, resource);')
    text = stmt.text
    assert position(stmt, 0) == (2, 3)
    assert position(stmt, text.index("permit")) == (3, 1)
    assert position(stmt, text.index("action")) == (4, 3)


def test_tokens_skip_comments_and_keep_strings_and_operators_whole():
    text = 'when { x == "a // b" // c\n && y::z };'
    assert [text[a:b] for a, b in token_spans(text)] == ["when", "{", "x", "==", '"a // b"', "&&", "y", "::", "z",
                                                         "}", ";"]


def test_the_id_annotation_is_found_among_leading_annotations_only():
    assert annotated_id('@doc("x") // note\n@id("the-id")\npermit(principal, action, resource);') == "the-id"
    assert annotated_id('permit(principal, action, resource) when { context.s == "@id(\\"x\\")" };') == ""


def test_a_parse_error_is_placed_at_the_shortest_prefix_failing_as_reported():
    (stmt,) = split_statements('@id("a")\npermit (principal, action, resource)\nwhen { true } };')
    errors = {}

    def error_of(text):
        errors[text] = "unexpected token `}`" if text.count("}") > 1 else "unexpected token `;`"
        return errors[text]

    assert parse_error_position(stmt, "unexpected token `}`", error_of) == (3, 15)
    assert len(errors) <= 6  # a binary search, not a parse per token
    assert parse_error_position(stmt, "found an invalid variable", error_of) == (1, 1)


def test_unprintable_characters_are_found_and_escaped():
    assert first_unprintable("ok-id ü 読") == ""
    assert (first_unprintable("a\x1b[2Kb"), escape_unprintable("a\x1b[2Kb")) == ("U+001B", "a\\x1b[2Kb")
    assert escape_unprintable("x\u200by\u2028") == "x\\u200by\\u2028"
