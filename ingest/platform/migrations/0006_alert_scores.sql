-- Every aggregate score the rules computed (NEWS2), alerting or not, counted per rule,
-- source partition, day (of the readings' event time, UTC) and programme: the evidence
-- report's distribution. Written in the batch transactions, so each scored set counts
-- exactly once; a partition's rows are only written by the member that owns it.
CREATE TABLE alert_scores (
    rule_id text NOT NULL,
    partition integer NOT NULL,
    day date NOT NULL,
    programme text NOT NULL,
    score smallint NOT NULL,
    sets bigint NOT NULL,
    PRIMARY KEY (rule_id, partition, day, programme, score)
);
