import { z } from "zod";

export const ROLES = ["user", "reviewer", "admin"] as const;
export type Role = (typeof ROLES)[number];
export const roleSchema = z.enum(ROLES);
