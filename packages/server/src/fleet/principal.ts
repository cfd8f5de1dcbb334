/** Who is calling: an operator's API key (scoped to its owner, or admin) or one instance's agent. */
export type Principal =
  | { kind: 'operator'; owner: string; admin: boolean }
  | { kind: 'agent'; instanceId: number };

export type Operator = Extract<Principal, { kind: 'operator' }>;

export const canSee = (operator: Operator, owner: string): boolean => operator.admin || operator.owner === owner;
