/** A message under the control it is about; the control points to it with aria-describedby. */
export function FieldError({ id, message }: { id: string; message: string | null | undefined }) {
  if (!message) return null;
  return (
    <p id={id} class="error field-error" role="alert">
      {message}
    </p>
  );
}
